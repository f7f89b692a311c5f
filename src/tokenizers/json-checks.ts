/**
 * What a tokenizer.json from the internet may ask of the tokenizer library before it is handed
 * over. The library runs the file's regexes with JavaScript's backtracking engine and its
 * normalizers on the whole text, so a hostile file could otherwise hang Topiary or exhaust its
 * memory. The bounds (chosen to admit every tokenizer real models publish):
 * - regexes: no repeated group that can match in more than one way (nested quantifiers such as
 *   `(\w+\s?)*`, repeated alternations such as `(a|aa)*`: exponential backtracking), no
 *   backreferences, at most MAX_REGEX_DEGREE unbounded quantifiers in a row, no two followed by
 *   something that can fail (`[\s\S]*[\s\S]*x` is cubic on a text without x), and no unbounded
 *   repeat of (nearly) any character (`.`, `[^...]`, `\S`) followed by something that can fail
 *   (`.*x` is quadratic in the text). GPT-2's, Llama 3's, Qwen2's, GPT-4o's and DeepSeek's pass:
 *   their broad repeats end their alternatives. What this leaves is quadratic at worst in the
 *   length of a run of one character class (as Llama 3's `\s*[\r\n]+` is on a run of spaces);
 * - normalizers and pre-tokenizers: a worst-case growth of the text, from the config, of at most
 *   MAX_EXPANSION times (a Replace whose content is 100,000 characters long is refused);
 * - token ids: non-negative integers, at most MAX_ID_GAP beyond the number of tokens (the library
 *   sizes tables by the largest id).
 */
import { TopiaryError } from '../util/errors.js';

export const MAX_REGEX_DEGREE = 2;
export const MAX_EXPANSION = 1024;
export const MAX_ID_GAP = 65_536;
const MAX_JSON_NESTING = 64;

/** Worst-case growth of the text, per character, of each normalizer and pre-tokenizer type. */
const EXPANSION_BY_TYPE: Record<string, number> = {
  // Unicode compatibility decomposition: U+FDFA becomes 18 characters. Precompiled is NFKC in the library.
  NFKC: 18,
  NFKD: 18,
  Precompiled: 18,
  NFC: 4,
  NFD: 4,
  Lowercase: 3,
  // Spaces around CJK characters, accents stripped, lowercase.
  BertNormalizer: 3 * 3,
  // A replacement character before each word.
  Metaspace: 2,
};

type Json = Record<string, unknown>;

/** Throws a one-line TopiaryError naming `file` and what is refused, or returns. */
export function checkTokenizerJson(tokenizerJson: Json, file: string | undefined): void {
  const fail = (message: string): never => {
    throw new TopiaryError(`refusing this tokenizer: ${message}`, file);
  };
  forEachNode(tokenizerJson, '', (node, where) => {
    if (!('pattern' in node) && node.type !== 'Replace' && node.type !== 'Split') return;
    const pattern = node.pattern as Json | null;
    // The library only warns about other shapes and then fails on first use.
    if (typeof pattern?.Regex === 'string') {
      const problem = regexProblem(pattern.Regex);
      if (problem) fail(`the regex ${JSON.stringify(pattern.Regex)} at ${where}.pattern ${problem}`);
    } else if (typeof pattern?.String !== 'string') {
      fail(`${where}.pattern is not {"Regex": "..."} or {"String": "..."}`);
    }
  }, fail);
  for (const key of ['normalizer', 'pre_tokenizer']) {
    const growth = expansion(tokenizerJson[key]);
    if (growth > MAX_EXPANSION) fail(`its ${key} can make the text up to ${growth} times longer (at most ${MAX_EXPANSION} is accepted)`);
  }
  checkIds(tokenizerJson, fail);
}

/**
 * Calls `visit` on every object in the tree, with its path (e.g. `pre_tokenizer.pretokenizers[0]`).
 * Configurations nest a few levels; deeper ones are refused before anything recurses through them.
 */
function forEachNode(node: unknown, where: string, visit: (node: Json, where: string) => void, fail: (message: string) => never, depth = 0): void {
  if (typeof node !== 'object' || node === null) return;
  if (depth > MAX_JSON_NESTING) fail(`${where.split(/[.[]/, 1)[0]} nests more than ${MAX_JSON_NESTING} levels deep`);
  if (Array.isArray(node)) {
    node.forEach((item, i) => forEachNode(item, `${where}[${i}]`, visit, fail, depth + 1));
    return;
  }
  visit(node as Json, where);
  for (const [key, value] of Object.entries(node)) {
    // The vocabulary and merges are data, not configuration: large, and holding no patterns.
    if (key === 'vocab' || key === 'merges') continue;
    forEachNode(value, where ? `${where}.${key}` : key, visit, fail, depth + 1);
  }
}

/** Worst-case factor by which a normalizer or pre-tokenizer config can lengthen the text. */
function expansion(node: unknown): number {
  if (typeof node !== 'object' || node === null) return 1;
  if (Array.isArray(node)) return node.reduce((product: number, item) => product * expansion(item), 1);
  const record = node as Json;
  const text = (value: unknown) => (typeof value === 'string' ? value.length : 0);
  let own = EXPANSION_BY_TYPE[String(record.type)] ?? 1;
  // Each match (or, for an empty match, each position) becomes `content`; Prepend adds once per piece.
  if (record.type === 'Replace') own = 1 + text(record.content);
  if (record.type === 'Prepend') own = 1 + text(record.prepend);
  const children = [record.normalizers, record.pretokenizers].reduce((product: number, list) => product * expansion(list), 1);
  return own * children;
}

function checkIds(tokenizerJson: Json, fail: (message: string) => never): void {
  const ids: { id: unknown; what: string }[] = [];
  const model = tokenizerJson.model as Json | undefined;
  const vocab = model?.vocab;
  // Unigram vocabularies are [piece, score] pairs whose ids are their positions: nothing to check.
  let tokens = model?.type === 'Unigram' && Array.isArray(vocab) ? vocab.length : 0;
  if (tokens === 0 && typeof vocab === 'object' && vocab !== null) {
    // Token to id (the library also takes an array here, as index to id).
    for (const [token, id] of Object.entries(vocab)) ids.push({ id, what: `model.vocab ${JSON.stringify(token)}` });
  }
  const added = Array.isArray(tokenizerJson.added_tokens) ? tokenizerJson.added_tokens : [];
  added.forEach((token: unknown, i) => ids.push({ id: (token as Json | null)?.id, what: `added_tokens[${i}].id` }));
  tokens += ids.length;
  const limit = tokens + MAX_ID_GAP;
  for (const { id, what } of ids) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= limit) {
      fail(`${what} is ${JSON.stringify(id)}, not a token id from 0 to ${limit - 1} (${tokens} tokens)`);
    }
  }
}

interface RegexShape {
  /** Most unbounded quantifiers one match can pass through in sequence. */
  degree: number;
  /** Whether the node can match strings of different lengths (a quantifier or an alternation inside). */
  variable: boolean;
  /** Whether the node can fail to match (it cannot if it may always match the empty string: `x*`, `(?:y)?`). */
  canFail: boolean;
  /** Whether it holds an unbounded quantifier over (nearly) any character: `.*`, `[^x]+`, `\S*`. */
  sweeps: boolean;
}

const FIXED_ATOM: RegexShape = { degree: 0, variable: false, canFail: true, sweeps: false };

/**
 * Why running `source` with a backtracking engine may take more than polynomial (or more than
 * quadratic) time, or undefined. A syntax-level analysis of the Oniguruma/JavaScript subset that
 * tokenizers use; a pattern it does not understand is left to the library to reject.
 */
export function regexProblem(source: string): string | undefined {
  try {
    const parser = new RegexParser(source);
    const shape = parser.alternation();
    if (shape.degree > MAX_REGEX_DEGREE) {
      return `has ${shape.degree} unbounded quantifiers in a row (at most ${MAX_REGEX_DEGREE}): it can take polynomial time of that degree`;
    }
    return undefined;
  } catch (error) {
    if (error instanceof RegexRefusal) return error.message;
    throw error;
  }
}

class RegexRefusal extends Error {}

/** Groups nest at most this deep: the parser recurses per group, and real patterns nest two deep. */
const MAX_GROUP_NESTING = 64;
/** A counted quantifier at the current position ({n}, {n,}, {n,m}); sticky, so no slicing per brace. */
const COUNTED_QUANTIFIER = /\{(\d+)(,(\d*))?\}/y;

class RegexParser {
  private pos = 0;
  private depth = 0;

  constructor(private readonly source: string) {}

  alternation(): RegexShape {
    let shape = this.sequence();
    while (this.source[this.pos] === '|') {
      this.pos++;
      const branch = this.sequence();
      shape = { degree: Math.max(shape.degree, branch.degree), variable: true, canFail: shape.canFail && branch.canFail, sweeps: shape.sweeps || branch.sweeps };
    }
    return shape;
  }

  private sequence(): RegexShape {
    const shape: RegexShape = { degree: 0, variable: false, canFail: false, sweeps: false };
    while (this.pos < this.source.length && this.source[this.pos] !== '|' && this.source[this.pos] !== ')') {
      const broad = this.atBroadAtom();
      const atom = this.atom();
      const quantifier = this.quantifier() ?? { min: 1, max: 1 };
      if (quantifier.max > 1 && atom.variable) {
        throw new RegexRefusal('repeats a group that can match in more than one way (a nested quantifier or a repeated alternation): it can take exponential time');
      }
      const item: RegexShape = {
        degree: atom.degree + (quantifier.max === Infinity ? 1 : 0),
        variable: atom.variable || quantifier.min !== quantifier.max,
        canFail: atom.canFail && quantifier.min > 0,
        sweeps: atom.sweeps || (broad && quantifier.max === Infinity),
      };
      // Two unbounded quantifiers over overlapping text, then a failure, retry every split of the
      // text between them at every start: cubic time (`[\s\S]*[\s\S]*x` on a text without x).
      if (item.canFail && shape.degree >= 2) {
        throw new RegexRefusal('has two unbounded quantifiers in a row followed by something that can fail to match: it can take cubic time');
      }
      // One over any character, then a failure, retries the rest of the text from every start:
      // quadratic in the text's length (`.*x` on a long line without x).
      if (item.canFail && shape.sweeps) {
        throw new RegexRefusal('repeats (nearly) any character without bound, then needs something that can fail to match: it can take time quadratic in the text');
      }
      shape.degree += item.degree;
      shape.sweeps ||= item.sweeps;
      shape.variable ||= item.variable;
      shape.canFail ||= item.canFail;
    }
    return shape;
  }

  private atom(): RegexShape {
    const c = this.source[this.pos]!;
    if (c === '(') return this.group();
    if (c === '[') {
      this.characterClass();
      return FIXED_ATOM;
    }
    if (c === '\\') {
      this.escape();
      return FIXED_ATOM;
    }
    this.pos++;
    return FIXED_ATOM;
  }

  private group(): RegexShape {
    if (++this.depth > MAX_GROUP_NESTING) throw new RegexRefusal(`nests groups more than ${MAX_GROUP_NESTING} deep`);
    this.pos++; // (
    let lookaround = false;
    if (this.source[this.pos] === '?') {
      this.pos++;
      const kind = this.source[this.pos];
      if (kind === ':') {
        this.pos++;
      } else if (kind === '=' || kind === '!') {
        this.pos++;
        lookaround = true;
      } else if (kind === '<' && (this.source[this.pos + 1] === '=' || this.source[this.pos + 1] === '!')) {
        this.pos += 2;
        lookaround = true;
      } else if (kind === '<') {
        const end = this.source.indexOf('>', this.pos);
        this.pos = end < 0 ? this.source.length : end + 1;
      } else {
        // Inline flags: (?i) applies to what follows, (?i:...) to the group.
        while (this.pos < this.source.length && /[A-Za-z-]/.test(this.source[this.pos]!)) this.pos++;
        if (this.source[this.pos] === ')') {
          this.pos++;
          this.depth--;
          return { degree: 0, variable: false, canFail: false, sweeps: false };
        }
        this.pos++; // :
      }
    }
    const body = this.alternation();
    this.pos++; // )
    this.depth--;
    // A lookaround matches nothing, and may fail whatever it holds.
    return lookaround ? { ...body, variable: false, canFail: true } : body;
  }

  /**
   * Whether the atom at the current position matches (nearly) any character: `.`, a negated
   * class, `\S`-like escapes, or a class holding one (`[\s\S]`).
   */
  private atBroadAtom(): boolean {
    const c = this.source[this.pos];
    if (c === '.') return true;
    if (c === '\\') return /[SWDP]/.test(this.source[this.pos + 1] ?? '');
    if (c !== '[') return false;
    if (this.source[this.pos + 1] === '^') return true;
    const start = this.pos;
    this.characterClass();
    const text = this.source.slice(start, this.pos);
    this.pos = start;
    return /\\[SWDP]/.test(text);
  }

  /** Skips a character class, with Oniguruma's nested classes ([a-z&&[^aeiou]]). */
  private characterClass(): void {
    let depth = 0;
    while (this.pos < this.source.length) {
      const c = this.source[this.pos]!;
      if (c === '\\') {
        this.pos += 2;
        continue;
      }
      this.pos++;
      if (c === '[') depth++;
      else if (c === ']' && --depth === 0) return;
    }
  }

  private escape(): void {
    const next = this.source[this.pos + 1] ?? '';
    if (/[1-9k]/.test(next)) throw new RegexRefusal('uses a backreference: it can take exponential time');
    this.pos += 2;
    // \p{...}, \u{...}, \x{...}: skip the braces.
    if (/[pPux]/.test(next) && this.source[this.pos] === '{') {
      const end = this.source.indexOf('}', this.pos);
      this.pos = end < 0 ? this.source.length : end + 1;
    }
  }

  private quantifier(): { min: number; max: number } | undefined {
    const c = this.source[this.pos];
    let bounds: { min: number; max: number } | undefined;
    if (c === '*') bounds = { min: 0, max: Infinity };
    else if (c === '+') bounds = { min: 1, max: Infinity };
    else if (c === '?') bounds = { min: 0, max: 1 };
    if (bounds) {
      this.pos++;
    } else if (c === '{') {
      COUNTED_QUANTIFIER.lastIndex = this.pos;
      const match = COUNTED_QUANTIFIER.exec(this.source);
      if (!match) return undefined; // a literal brace
      this.pos += match[0].length;
      const min = Number(match[1]);
      bounds = { min, max: match[2] === undefined ? min : match[3] === '' ? Infinity : Number(match[3]) };
    } else {
      return undefined;
    }
    // Lazy (?) and possessive (+) forms backtrack no more than the greedy one.
    if (this.source[this.pos] === '?' || this.source[this.pos] === '+') this.pos++;
    return bounds;
  }
}
