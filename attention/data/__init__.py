"""Tasks and data: generators, file readers and the input pipeline (NumPy only, no Flax).

    from attention.data import load_translation, load_movies, pipeline

    data = load_translation(config.data, workdir)  # or load_movies(...)
    train_it = pipeline.train_iterator(data.train, config)
    batch = next(train_it)                        # dict of NumPy arrays
    state = train_it.get_state()                  # checkpoint with the model

Modules: `toy_translation`, `translation_files` (TSV), `movie_world`,
`movielens` (MovieLens layouts and 'user item' files), `tfds_source`,
`tokenizers`, `pipeline`, `translation` / `movies` (the task entry points)
and `config` (the config.data keys).
"""

from attention.data.movies import load_movies
from attention.data.movies import MovieData
from attention.data.movies import MovieSplit
from attention.data.translation import load_translation
from attention.data.translation import TranslationData
from attention.data.translation import TranslationSplit
