import { describe, expect, it } from 'vitest';
import { FerryError } from '../../protocol/errors.js';
import { MAX_GLOB_LENGTH, MAX_GLOB_SUBJECT_LENGTH, MAX_WHERE_CLAUSE_LENGTH, MAX_WHERE_CLAUSES, MAX_WHERE_VALUES } from '../../protocol/where.js';
import { clauseHolds, globMatches, labelsMatch, parseWhere } from './selectors.js';

const holds = (clause: string, value: unknown): boolean => clauseHolds(parseWhere([clause])[0]!, value);
const refusal = (clauses: string[]): string => {
  try {
    parseWhere(clauses);
  } catch (error) {
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).code).toBe('INVALID');
    return (error as FerryError).message;
  }
  throw new Error(`accepted ${JSON.stringify(clauses)}`);
};

describe('--where selectors', () => {
  it.each([
    // clause, value, holds
    ['labels.site=barn-3', 'barn-3', true],
    ['labels.site=barn-3', 'barn-30', false],
    ['labels.site=barn-3', undefined, false],
    ['labels.site=barn-*', 'barn-3', true],
    ['labels.site=barn-*', 'barn-', true],
    ['labels.site=barn-*', 'bar', false],
    ['labels.site=*-3', 'barn-3', true],
    ['labels.site=*arn*', 'barn-3', true],
    ['labels.site=b*n-?', 'barn-3', true],
    ['labels.site=b*n-?', 'barn-30', false],
    ['labels.site=a*a*a*b', 'aaaaab', true],
    ['labels.site=a*a*a*b', 'aaaaa', false],
    ['labels.site=*', '', true],
    ['labels.site=**', 'x', true],
    ['labels.site=a,b', 'b', true],
    ['labels.site=a,b', 'a,b', false],
    ['labels.site=a\\,b', 'a,b', true],
    ['labels.site=barn\\*', 'barn*', true],
    ['labels.site=barn\\*', 'barn-1', false],
    ['labels.site=what\\?', 'what?', true],
    ['labels.site=what\\?', 'whats', false],
    ['labels.site=back\\\\slash', 'back\\slash', true],
    ['labels.site=', '', true],
    ['labels.tier!=canary', 'stable', true],
    ['labels.tier!=canary', 'canary', false],
    ['labels.tier!=canary', undefined, true],
    ['labels.tier!=canary,beta*', 'beta-2', false],
    ['labels.gpu', 'a100', true],
    ['labels.gpu', '', true],
    ['labels.gpu', undefined, false],
    ['!labels.gpu', undefined, true],
    ['!labels.gpu', 'a100', false],
    ['facts.cpus=4', 4, true],
    ['facts.cpus=4,8', 8, true],
    ['status=enrolled,enrolling', 'enrolling', true],
    ['system=*-linux', 'aarch64-linux', true],
    ['presence=online,stale', 'stale', true],
    ['presence!=offline', 'offline', false],
  ] as const)('%s on %j: %s', (clause, value, expected) => {
    expect(holds(clause, value)).toBe(expected);
  });

  it('keeps a label key with dots and slashes whole', () => {
    const [clause] = parseWhere(['labels.example.com/site=barn-*']);
    expect(clause).toMatchObject({ source: 'labels', path: ['example.com/site'], op: 'in' });
    expect(labelsMatch({ 'example.com/site': 'barn-1' }, [clause!])).toBe(true);
  });

  it('names what is wrong, and where', () => {
    expect(refusal(['site=prod'])).toMatch(/'site' is not an agent field.*labels\.site.*facts\.site/);
    expect(refusal(['labels.site'.concat('~x')])).toMatch(/unexpected "~"/);
    expect(refusal(['!labels.gpu=1'])).toMatch(/!KEY takes no value/);
    expect(refusal(['=x'])).toMatch(/expected KEY=VALUE/);
    expect(refusal(['presence=asleep'])).toMatch(/presence is online, stale, offline/);
    expect(refusal(['presence=on*'])).toMatch(/presence is/);
    expect(refusal(['presence'])).toMatch(/every agent has a presence/);
    expect(refusal(['labels.site=barn\\'])).toMatch(/trailing \\/);
    expect(refusal(['labels.'])).toMatch(/not an agent field/);
  });

  describe('hostile input', () => {
    it('bounds the clause count, clause length, set size and glob length', () => {
      expect(parseWhere(Array.from({ length: MAX_WHERE_CLAUSES }, () => 'labels.a'))).toHaveLength(MAX_WHERE_CLAUSES);
      expect(refusal(Array.from({ length: MAX_WHERE_CLAUSES + 1 }, () => 'labels.a'))).toMatch(`at most ${MAX_WHERE_CLAUSES} clauses`);
      expect(refusal([`labels.a=${'x'.repeat(MAX_WHERE_CLAUSE_LENGTH)}`])).toMatch(`at most ${MAX_WHERE_CLAUSE_LENGTH} characters`);
      expect(refusal([`labels.a=${Array.from({ length: MAX_WHERE_VALUES + 1 }, (_, i) => i).join(',')}`])).toMatch(`at most ${MAX_WHERE_VALUES} values`);
      expect(refusal([`labels.a=${'*a'.repeat(MAX_GLOB_LENGTH / 2 + 1)}`])).toMatch(`a glob is at most ${MAX_GLOB_LENGTH}`);
      // A long literal is fine: only globs are bounded tighter.
      expect(parseWhere([`labels.a=${'x'.repeat(200)}`])[0]!.values[0]).toMatchObject({ kind: 'literal' });
    });

    it('takes regex metacharacters as themselves (no regex is built from input)', () => {
      expect(holds('labels.a=(a+)+$', '(a+)+$')).toBe(true);
      expect(holds('labels.a=(a+)+$', 'aaaa')).toBe(false);
      expect(holds('labels.a=.*', 'anything')).toBe(false);
      expect(holds('labels.a=.*', '.x')).toBe(true);
      expect(holds('labels.a=[a-z]*', '[a-z]')).toBe(true);
      expect(holds('labels.a=^x|y', 'y')).toBe(false);
    });

    it('matches a backtracking-shaped glob against a long subject in bounded time', () => {
      const pattern = `labels.a=${'*a'.repeat(40)}*b`;
      const subject = 'a'.repeat(MAX_GLOB_SUBJECT_LENGTH);
      const started = performance.now();
      for (let i = 0; i < 20; i++) expect(holds(pattern, subject)).toBe(false);
      // Leftmost segment search: ~40 × 4096 steps per try; a backtracking regex would not finish.
      expect(performance.now() - started).toBeLessThan(2000);
      expect(holds(pattern, `${subject.slice(10)}b`)).toBe(true);
      // Past the subject bound, a glob never matches (a literal still compares).
      expect(holds('labels.a=*', 'x'.repeat(MAX_GLOB_SUBJECT_LENGTH + 1))).toBe(false);
    });

    it('quotes a hostile clause in its error (no raw control characters, cut at 80)', () => {
      const message = refusal([`\u001b[31mlabels.x\u0000=1`]);
      expect(message).not.toMatch(/[\u0000\u001b]/);
      expect(refusal([`${'q'.repeat(200)}=1`])).toMatch(/q{80}…/);
    });

    it('never matches through the prototype', () => {
      expect(holds('labels.__proto__', undefined)).toBe(false);
      expect(labelsMatch({}, parseWhere(['labels.constructor']))).toBe(false);
      expect(labelsMatch({}, parseWhere(['labels.toString=*']))).toBe(false);
    });
  });

  it('globMatches agrees with a brute-force matcher on many small cases', () => {
    const alphabet = ['a', 'b', '*', '?'];
    const brute = (p: string, s: string): boolean => {
      if (p === '') return s === '';
      if (p[0] === '*') return brute(p.slice(1), s) || (s !== '' && brute(p, s.slice(1)));
      return s !== '' && (p[0] === '?' || p[0] === s[0]) && brute(p.slice(1), s.slice(1));
    };
    const words = (length: number, letters: readonly string[]): string[] => (length === 0 ? [''] : words(length - 1, letters).flatMap((w) => letters.map((l) => w + l)));
    const patterns = [0, 1, 2, 3, 4].flatMap((n) => words(n, alphabet));
    const subjects = [0, 1, 2, 3, 4].flatMap((n) => words(n, ['a', 'b']));
    for (const pattern of patterns) {
      const value = parseWhere([`labels.x=${pattern}`])[0]!.values[0]!;
      for (const subject of subjects) {
        const got = value.kind === 'glob' ? globMatches(value.segments, subject) : value.text === subject;
        expect(got, `${pattern} ~ ${subject}`).toBe(brute(pattern, subject));
      }
    }
  });
});
