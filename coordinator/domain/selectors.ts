/**
 * `--where` selectors: one parser and one matcher for every place that
 * selects agents (`agents ls|status|assign|label`, `rules`, alerts,
 * relays, `bundle`). Syntax, one clause per `--where` (clauses are ANDed):
 *
 *   KEY=V[,V…]     KEY's value is one of the Vs (a V may be a glob)
 *   KEY!=V[,V…]    KEY's value is none of the Vs (an agent without KEY matches)
 *   KEY            KEY exists (a label or fact is set; a field is not null)
 *   !KEY           KEY does not exist
 *
 * KEY is an agent field (`status`, `system`…), `presence`, `labels.K` (an
 * operator label; K may hold dots) or `facts.PATH`. In a V, `*` matches
 * any run of characters and `?` one character; `\` makes the next
 * character literal (`\,` `\*` `\?` `\\`). The syntax needs no shell
 * quoting but for `!KEY` in an interactive bash (history expansion):
 * write `'!labels.gpu'`.
 *
 * Bounded (protocol/where.ts): clause count and length, set size, glob
 * length and the length of what a glob is matched against. Globs are
 * matched by hand (segments between `*`, each found leftmost), never by a
 * regular expression built from input: no injection, no backtracking
 * blow-up; a comparison costs at most pattern × subject character steps.
 */
import { getTableColumns } from 'drizzle-orm';
import { FerryError } from '../../protocol/errors.js';
import { PresenceSchema } from '../../protocol/api/views.js';
import { MAX_GLOB_LENGTH, MAX_GLOB_SUBJECT_LENGTH, MAX_WHERE_CLAUSE_LENGTH, MAX_WHERE_CLAUSES, MAX_WHERE_VALUES } from '../../protocol/where.js';
import { agents } from '../db/schema.js';

/** One value of a clause: a literal, or a glob split at its stars (`barn-*` → ['barn-', '']), where `?` stays a wildcard. */
export type WhereValue = { kind: 'literal'; text: string } | { kind: 'glob'; segments: GlobSegment[] };

/** A run of a glob between stars: its characters, with `wild[i]` true where the pattern had an unescaped `?`. */
export interface GlobSegment {
  chars: string;
  wild: boolean[];
}

/**
 * One parsed clause, by where its value comes from:
 * - `agent`: a field the coordinator keeps (`status`, `name`, `system`…);
 * - `labels`: an operator label (set by a token or `agents label`: the agent
 *   cannot set these, so they are what deployments target);
 * - `facts`: what the agent reports about itself (`facts.cpus`): selectable,
 *   but only when the clause says so;
 * - `presence`: online, stale or offline, derived now (db/agent-presence.ts).
 */
export interface WhereClause {
  source: 'agent' | 'labels' | 'facts' | 'presence';
  path: string[];
  op: 'in' | 'not-in' | 'exists' | 'missing';
  /** For `in` / `not-in`: at least one. */
  values: WhereValue[];
  /** The clause as given (for messages). */
  text: string;
}

const KEY_CHAR = /[A-Za-z0-9_.\/-]/;

/** Fields a clause may name on their own: the agents table's columns, but `labels` (it needs a key). */
const AGENT_FIELDS: ReadonlySet<string> = new Set(Object.keys(getTableColumns(agents)).filter((field) => field !== 'labels'));

function invalid(clause: string, message: string): FerryError {
  // Control characters escaped as JSON escapes them: a hostile clause cannot break the message's line.
  const shown = JSON.stringify(clause.length > 80 ? `${clause.slice(0, 80)}…` : clause).slice(1, -1);
  return new FerryError('INVALID', `--where '${shown}': ${message}`);
}

/** Splits `a,b\,c` into values, resolving escapes; a glob keeps its unescaped `*`/`?` as wildcards. */
function parseValues(clause: string, text: string): WhereValue[] {
  const values: WhereValue[] = [];
  let segments: GlobSegment[] = [{ chars: '', wild: [] }];
  let globbed = false;
  let length = 0;
  const finish = (): void => {
    if (values.length >= MAX_WHERE_VALUES) throw invalid(clause, `at most ${MAX_WHERE_VALUES} values in one clause`);
    if (globbed && length > MAX_GLOB_LENGTH) throw invalid(clause, `a glob is at most ${MAX_GLOB_LENGTH} characters`);
    values.push(globbed ? { kind: 'glob', segments } : { kind: 'literal', text: segments[0]!.chars });
    segments = [{ chars: '', wild: [] }];
    globbed = false;
    length = 0;
  };
  for (let i = 0; i < text.length; i++) {
    let ch = text[i]!;
    let literal = false;
    if (ch === '\\') {
      if (i + 1 >= text.length) throw invalid(clause, 'a trailing \\ escapes nothing');
      ch = text[++i]!;
      literal = true;
    }
    if (!literal && ch === ',') {
      finish();
      continue;
    }
    length++;
    const segment = segments[segments.length - 1]!;
    if (!literal && ch === '*') {
      globbed = true;
      // Consecutive stars are one star.
      if (segment.chars !== '' || segments.length === 1) segments.push({ chars: '', wild: [] });
      continue;
    }
    if (!literal && ch === '?') globbed = true;
    segment.chars += ch;
    segment.wild.push(!literal && ch === '?');
  }
  finish();
  return values;
}

function parseKey(clause: string, key: string): Pick<WhereClause, 'source' | 'path'> {
  const [head, ...rest] = key.split('.');
  if ((head === 'labels' || head === 'facts') && rest.length > 0 && rest.every((part) => part !== '')) {
    return head === 'labels' ? { source: 'labels', path: [rest.join('.')] } : { source: 'facts', path: rest };
  }
  if (key === 'presence') return { source: 'presence', path: [] };
  if (rest.length === 0 && AGENT_FIELDS.has(key)) return { source: 'agent', path: [key] };
  throw invalid(
    clause,
    `'${key}' is not an agent field (${[...AGENT_FIELDS, 'presence'].join(', ')}); ` +
      `name an operator label (labels.${key}=…) or a fact the agent reports (facts.${key}=…)`,
  );
}

function parseClause(clause: string): WhereClause {
  if (clause.length > MAX_WHERE_CLAUSE_LENGTH) throw invalid(clause, `a clause is at most ${MAX_WHERE_CLAUSE_LENGTH} characters`);
  const negated = clause.startsWith('!');
  let end = negated ? 1 : 0;
  while (end < clause.length && KEY_CHAR.test(clause[end]!)) end++;
  const key = clause.slice(negated ? 1 : 0, end);
  if (key === '') throw invalid(clause, 'expected KEY=VALUE, KEY!=VALUE, KEY or !KEY');
  const rest = clause.slice(end);
  let op: WhereClause['op'];
  let valueText = '';
  if (rest === '') op = negated ? 'missing' : 'exists';
  else if (negated) throw invalid(clause, '!KEY takes no value (to exclude values, write KEY!=VALUE)');
  else if (rest.startsWith('!=')) [op, valueText] = ['not-in', rest.slice(2)];
  else if (rest.startsWith('=')) [op, valueText] = ['in', rest.slice(1)];
  else throw invalid(clause, `unexpected ${JSON.stringify(rest[0])} after '${key}' (a key is letters, digits and ._/-)`);
  const { source, path } = parseKey(clause, key);
  const values = op === 'in' || op === 'not-in' ? parseValues(clause, valueText) : [];
  if (source === 'presence') {
    if (op === 'exists' || op === 'missing') throw invalid(clause, 'every agent has a presence: compare it (presence=online)');
    for (const value of values) {
      if (value.kind !== 'literal' || !PresenceSchema.safeParse(value.text).success) throw invalid(clause, `presence is ${PresenceSchema.options.join(', ')}`);
    }
  }
  return { source, path, op, values, text: clause };
}

/**
 * Parses `--where` clauses (see the module comment). Refuses (INVALID,
 * naming the clause) a malformed clause, a bare key that is no agent field
 * (`site=prod` could otherwise select machines that merely claim it: say
 * `labels.site` or `facts.site`), and anything beyond the bounds.
 */
export function parseWhere(clauses: readonly string[]): WhereClause[] {
  if (clauses.length > MAX_WHERE_CLAUSES) throw new FerryError('INVALID', `--where: at most ${MAX_WHERE_CLAUSES} clauses (got ${clauses.length})`);
  return clauses.map(parseClause);
}

/** Whether `subject` matches the glob's segments: the first anchored at the start, the last at the end, the others found leftmost in between. */
function segmentAt(segment: GlobSegment, subject: string, at: number): boolean {
  if (at + segment.chars.length > subject.length) return false;
  for (let i = 0; i < segment.chars.length; i++) if (!segment.wild[i] && segment.chars[i] !== subject[at + i]) return false;
  return true;
}

/** Whether `subject` matches `segments` (a glob split at its stars). Linear in segments, at most pattern × subject steps. */
export function globMatches(segments: readonly GlobSegment[], subject: string): boolean {
  if (subject.length > MAX_GLOB_SUBJECT_LENGTH) return false;
  const first = segments[0]!;
  if (segments.length === 1) return first.chars.length === subject.length && segmentAt(first, subject, 0);
  const last = segments[segments.length - 1]!;
  if (first.chars.length + last.chars.length > subject.length) return false;
  if (!segmentAt(first, subject, 0) || !segmentAt(last, subject, subject.length - last.chars.length)) return false;
  let at = first.chars.length;
  const limit = subject.length - last.chars.length;
  for (let s = 1; s < segments.length - 1; s++) {
    const segment = segments[s]!;
    let found = -1;
    for (let start = at; start + segment.chars.length <= limit; start++) {
      if (segmentAt(segment, subject, start)) {
        found = start;
        break;
      }
    }
    if (found < 0) return false;
    at = found + segment.chars.length;
  }
  return true;
}

function valueMatches(value: WhereValue, subject: string): boolean {
  return value.kind === 'literal' ? value.text === subject : globMatches(value.segments, subject);
}

/**
 * Whether a clause holds of `found` (the value its key names: undefined or
 * null when absent). A present value is compared as its string form.
 */
export function clauseHolds(clause: WhereClause, found: unknown): boolean {
  const present = found !== undefined && found !== null;
  switch (clause.op) {
    case 'exists':
      return present;
    case 'missing':
      return !present;
    case 'in':
      return present && clause.values.some((value) => valueMatches(value, String(found)));
    case 'not-in':
      return !present || !clause.values.some((value) => valueMatches(value, String(found)));
  }
}

/** The value at `path` in `value` (own properties only), or undefined. */
export function lookupPath(value: unknown, path: readonly string[]): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, key)) return undefined;
    current = (current as Record<string, unknown>)[key];
  }
  return current;
}

/** Whether operator `labels` satisfy every clause (each a `labels.*` clause: what rules select on). */
export function labelsMatch(labels: Readonly<Record<string, string>>, where: readonly WhereClause[]): boolean {
  return where.every((clause) => clause.source === 'labels' && clauseHolds(clause, lookupPath(labels, clause.path)));
}
