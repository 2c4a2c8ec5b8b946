"""The toy translation task's lexicon: English-like words and their Toylian.

Word lists and inflections only; the grammar that builds sentences from them
is attention.data.toy_translation. Genders are 'm' and 'f'; agreement slots
index (masculine singular, feminine singular, masculine plural, feminine
plural).
"""

from __future__ import annotations

# (english singular, english plural, target singular, target plural, gender).
# Multi-word entries are split on spaces into several tokens.
NOUNS = (
    ('cat', 'cats', 'gatto', 'gatti', 'm'),
    ('dog', 'dogs', 'cane', 'cani', 'm'),
    ('man', 'men', 'uomo', 'uomini', 'm'),
    ('boy', 'boys', 'ragazzo', 'ragazzi', 'm'),
    ('bird', 'birds', 'uccello', 'uccelli', 'm'),
    ('tree', 'trees', 'albero', 'alberi', 'm'),
    ('book', 'books', 'libro', 'libri', 'm'),
    ('horse', 'horses', 'cavallo', 'cavalli', 'm'),
    ('bridge', 'bridges', 'ponte', 'ponti', 'm'),
    ('park', 'parks', 'parco', 'parchi', 'm'),
    ('market', 'markets', 'mercato', 'mercati', 'm'),
    ('train', 'trains', 'treno', 'treni', 'm'),
    ('village', 'villages', 'villaggio', 'villaggi', 'm'),
    ('friend', 'friends', 'amico', 'amici', 'm'),
    ('mouse', 'mice', 'topo', 'topi', 'm'),
    ('lion', 'lions', 'leone', 'leoni', 'm'),
    ('teacher', 'teachers', 'maestro', 'maestri', 'm'),
    ('student', 'students', 'studente', 'studenti', 'm'),
    ('doctor', 'doctors', 'dottore', 'dottori', 'm'),
    ('garden', 'gardens', 'giardino', 'giardini', 'm'),
    ('river', 'rivers', 'fiume', 'fiumi', 'm'),
    ('table', 'tables', 'tavolo', 'tavoli', 'm'),
    ('hill', 'hills', 'colle', 'colli', 'm'),
    ('sea', 'seas', 'mare', 'mari', 'm'),
    ('flower', 'flowers', 'fiore', 'fiori', 'm'),
    ('ice cream', 'ice creams', 'gelato', 'gelati', 'm'),
    ('fire truck', 'fire trucks', 'autopompo', 'autopompi', 'm'),
    ('woman', 'women', 'donna', 'donne', 'f'),
    ('girl', 'girls', 'ragazza', 'ragazze', 'f'),
    ('street', 'streets', 'strada', 'strade', 'f'),
    ('house', 'houses', 'casa', 'case', 'f'),
    ('window', 'windows', 'finestra', 'finestre', 'f'),
    ('door', 'doors', 'porta', 'porte', 'f'),
    ('car', 'cars', 'macchina', 'macchine', 'f'),
    ('mountain', 'mountains', 'montagna', 'montagne', 'f'),
    ('forest', 'forests', 'foresta', 'foreste', 'f'),
    ('apple', 'apples', 'mela', 'mele', 'f'),
    ('letter', 'letters', 'lettera', 'lettere', 'f'),
    ('boat', 'boats', 'barca', 'barche', 'f'),
    ('cloud', 'clouds', 'nuvola', 'nuvole', 'f'),
    ('chair', 'chairs', 'sedia', 'sedie', 'f'),
    ('school', 'schools', 'scuola', 'scuole', 'f'),
    ('church', 'churches', 'chiesa', 'chiese', 'f'),
    ('queen', 'queens', 'regina', 'regine', 'f'),
    ('cow', 'cows', 'mucca', 'mucche', 'f'),
    ('key', 'keys', 'chiave', 'chiavi', 'f'),
    ('lamp', 'lamps', 'lampada', 'lampade', 'f'),
    ('breakfast', 'breakfasts', 'prima colazione', 'prime colazioni', 'f'),
    ('post office', 'post offices', 'posta', 'poste', 'f'),
)

# (english, target masculine singular, [ms, fs, mp, fp] if irregular).
ADJECTIVES = (
    ('big', 'grande'), ('small', 'piccolo'), ('old', 'vecchio'),
    ('new', 'nuovo'), ('red', 'rosso'), ('black', 'nero'), ('white', 'bianco'),
    ('green', 'verde'), ('happy', 'felice'), ('sad', 'triste'),
    ('tall', 'alto'), ('beautiful', 'bello'), ('young', 'giovane'),
    ('quiet', 'tranquillo'), ('fast', 'veloce'), ('slow', 'lento'),
    ('hungry', 'affamato'), ('tired', 'stanco'), ('yellow', 'giallo'),
    ('rich', 'ricco'), ('poor', 'povero'), ('dark', 'scuro'),
    ('strange', 'strano'), ('kind', 'gentile'), ('brave', 'coraggioso'),
    ('lazy', 'pigro'), ('angry', 'arrabbiato'), ('clever', 'furbo'),
)

# (base, third person singular, past, target stem, transitive).
VERBS = (
    ('walk', 'walks', 'walked', 'cammin', False),
    ('run', 'runs', 'ran', 'corr', False),
    ('sleep', 'sleeps', 'slept', 'dorm', False),
    ('sing', 'sings', 'sang', 'cant', False),
    ('dance', 'dances', 'danced', 'ball', False),
    ('swim', 'swims', 'swam', 'nuot', False),
    ('wait', 'waits', 'waited', 'aspett', False),
    ('laugh', 'laughs', 'laughed', 'rid', False),
    ('fall', 'falls', 'fell', 'cad', False),
    ('arrive', 'arrives', 'arrived', 'arriv', False),
    ('work', 'works', 'worked', 'lavor', False),
    ('play', 'plays', 'played', 'gioc', False),
    ('see', 'sees', 'saw', 'ved', True),
    ('eat', 'eats', 'ate', 'mangi', True),
    ('find', 'finds', 'found', 'trov', True),
    ('follow', 'follows', 'followed', 'segu', True),
    ('watch', 'watches', 'watched', 'guard', True),
    ('love', 'loves', 'loved', 'am', True),
    ('carry', 'carries', 'carried', 'port', True),
    ('open', 'opens', 'opened', 'apr', True),
    ('paint', 'paints', 'painted', 'diping', True),
    ('write', 'writes', 'wrote', 'scriv', True),
    ('call', 'calls', 'called', 'chiam', True),
    ('help', 'helps', 'helped', 'aiut', True),
)

# Verb endings by agreement slot (ms, fs, mp, fp).
PRESENT = ('o', 'a', 'ono', 'ano')
PARTICIPLE = ('ato', 'ata', 'ati', 'ate')
FUTURE = ('ero', 'era', 'eri', 'ere')
AUX = ('ha', 'hanno')  # By number.

# Definite article, by slot (ms, fs, mp, fp).
ARTICLE = ('il', 'la', 'i', 'le')
INDEFINITE = ('un', 'una')  # Singular only.
THIS = ('questo', 'questa', 'questi', 'queste')
SOME = (None, None, 'alcuni', 'alcune')  # Plural only.
MY = ('mio', 'mia', 'miei', 'mie')

# english -> (target word before the article or None, contracted forms by slot
# or None when the preposition does not contract).
PREPOSITIONS = {
    'on': (None, ('sul', 'sulla', 'sui', 'sulle'), 'su'),
    'in': (None, ('nel', 'nella', 'nei', 'nelle'), 'in'),
    'of': (None, ('del', 'della', 'dei', 'delle'), 'di'),
    'from': (None, ('dal', 'dalla', 'dai', 'dalle'), 'da'),
    'near': ('vicino', ('al', 'alla', 'ai', 'alle'), 'a'),
    'behind': ('dietro', ('al', 'alla', 'ai', 'alle'), 'a'),
    'with': (None, None, 'con'),
    'under': (None, None, 'sotto'),
}
CLAUSE_PREPOSITIONS = ('on', 'in', 'from', 'near', 'behind', 'with', 'under')
NOUN_PREPOSITIONS = ('of', 'near', 'behind', 'with', 'on', 'in')

ADVERBS = (
    ('quickly', 'in fretta'), ('slowly', 'piano'), ('often', 'spesso'),
    ('today', 'oggi'), ('again', 'di nuovo'), ('together', 'insieme'),
)
COORDINATORS = (('and', 'e'), ('but', 'ma'))
SUBORDINATORS = (('because', 'perche'), ('while', 'mentre'),
                  ('when', 'quando'))

DETERMINERS = ('the', 'a', 'my', 'this', 'some')


def slot(gender: str, plural: bool) -> int:
  return (2 if plural else 0) + (0 if gender == 'm' else 1)


def adjective_forms(stem_ms: str) -> tuple[str, str, str, str]:
  """(ms, fs, mp, fp) forms of an adjective given its masculine singular."""
  if stem_ms.endswith('e'):  # grande -> grandi.
    return stem_ms, stem_ms, stem_ms[:-1] + 'i', stem_ms[:-1] + 'i'
  root = stem_ms[:-1]
  if stem_ms.endswith('io'):  # vecchio -> vecchia, vecchi, vecchie.
    return stem_ms, root + 'a', root, root + 'e'
  if root.endswith(('c', 'g')):  # bianco -> bianca, bianchi, bianche.
    return stem_ms, root + 'a', root + 'hi', root + 'he'
  return stem_ms, root + 'a', root + 'i', root + 'e'


def source_words() -> list[str]:
  """Every source-language word, in a fixed order (the word vocabulary)."""
  words = []
  for sg, pl, *_ in NOUNS:
    words += sg.split() + pl.split()
  words += [a for a, _ in ADJECTIVES]
  for base, third, past, _, _ in VERBS:
    words += [base, third, past]
  words += list(DETERMINERS) + ['these', 'does', 'do', 'did', 'will', 'not']
  words += list(PREPOSITIONS) + [a for a, _ in ADVERBS]
  words += [c for c, _ in COORDINATORS + SUBORDINATORS]
  return list(dict.fromkeys(words))


def target_words() -> list[str]:
  """Every target-language word, in a fixed order (the word vocabulary)."""
  words = []
  for *_, tsg, tpl, _ in NOUNS:
    words += tsg.split() + tpl.split()
  for _, ms in ADJECTIVES:
    words += adjective_forms(ms)
  for *_, stem, _ in VERBS:
    words += [stem + e for e in PRESENT + PARTICIPLE + FUTURE]
  words += list(AUX) + list(ARTICLE) + list(INDEFINITE) + list(THIS)
  words += [w for w in SOME if w] + list(MY) + ['non', ',']
  for before, contracted, plain in PREPOSITIONS.values():
    words += ([before] if before else []) + list(contracted or ()) + [plain]
  for _, t in ADVERBS:
    words += t.split()
  words += [t for _, t in COORDINATORS + SUBORDINATORS]
  return list(dict.fromkeys(words))
