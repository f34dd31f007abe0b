// Facts from facts.d: an operator's files, bounded like what the coordinator accepts, so a
// runaway file is reported in factErrors instead of crashing the agent or being refused whole.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_FACTS_DEPTH } from '../protocol/json-bounds.js';
import { collectFacts } from './facts.js';

const dir = mkdtempSync(path.join(tmpdir(), 'ferry-facts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('facts.d', () => {
  it('merges JSON objects and reports files too deep, too large (without reading them) or not objects', () => {
    const factsDir = path.join(dir, 'facts.d');
    mkdirSync(factsDir);
    writeFileSync(path.join(factsDir, 'a-site.json'), JSON.stringify({ rack: 'r7' }));
    writeFileSync(path.join(factsDir, 'b-deep.json'), `{"x":${'['.repeat(1000)}${']'.repeat(1000)}}`);
    writeFileSync(path.join(factsDir, 'c-large.json'), `{"x":"${'y'.repeat(200_000)}"}`);
    writeFileSync(path.join(factsDir, 'd-array.json'), '[1]');
    writeFileSync(path.join(factsDir, 'e-edge.json'), `{"edge":${'['.repeat(MAX_FACTS_DEPTH - 1)}${']'.repeat(MAX_FACTS_DEPTH - 1)}}`);
    const facts = collectFacts(dir, factsDir);
    expect(facts.rack).toBe('r7');
    expect(facts.x).toBeUndefined();
    expect(facts.edge).toBeDefined();
    const errors = facts.factErrors as string[];
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(/^b-deep\.json: .*deeper than 32/);
    expect(errors[1]).toMatch(/^c-large\.json: larger than 65536 bytes/);
    expect(errors[2]).toBe('d-array.json: not a JSON object');
  });
});
