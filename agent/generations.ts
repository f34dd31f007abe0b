/**
 * Generations: each activation of a config is a numbered directory holding
 * what it ran (config.json) and a `system` symlink to its target; the
 * `profile` symlink names the current one and is switched atomically
 * (new symlink + rename), so it always points to a complete generation.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { StorePathSchema } from '../protocol/store-path-info.js';
import { HlcStringSchema } from '../protocol/hlc.js';

export const GenerationSchema = z.strictObject({
  number: z.number().int().min(1),
  configId: z.string().regex(/^[0-9a-f]{64}$/),
  graph: z.string().nullable(),
  /** The target store path and where it lives in this machine's store dir. */
  target: StorePathSchema,
  location: z.string(),
  /** Every store path of the target's closure (kept alive by this generation). */
  closure: z.array(StorePathSchema),
  activation: z.strictObject({ command: z.string(), environment: z.record(z.string(), z.string()), timeoutSeconds: z.number() }),
  health: z
    .strictObject({
      command: z.string(),
      timeoutSeconds: z.number(),
      retries: z.number(),
      intervalSeconds: z.number().optional(),
      unhealthyAfter: z.number().optional(),
      probationSeconds: z.number().optional(),
    })
    .nullable(),
  /** The config's deactivate command, run when the agent is told to stop (null: none, or made before configs had one). */
  deactivate: z.string().nullable().default(null),
  /** The config's HLC: a bundle of an older config is refused unless forced (null: made before generations recorded it). */
  hlc: HlcStringSchema.nullable().default(null),
  /** The secretsStamp of the secrets kept with it (generation-secrets.ts; null: none): another stamp for the same config is a new generation (a rotation). */
  secrets: z.string().regex(/^[0-9a-f]{64}$/).nullable().default(null),
  /**
   * The per-machine parameters it runs with (docs/secrets.md; null: none),
   * kept so a rollback runs with what that generation had: other
   * parameters for the same config are a new generation.
   */
  params: z.record(z.string(), z.string()).nullable().default(null),
  createdAt: z.number(),
});
export type Generation = z.infer<typeof GenerationSchema>;

export class Generations {
  constructor(
    private readonly dir: string,
    private readonly profile: string,
  ) {}

  list(): Generation[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir)
      .filter((entry) => /^\d+$/.test(entry))
      .map((entry) => GenerationSchema.parse(JSON.parse(readFileSync(path.join(this.dir, entry, 'config.json'), 'utf8'))))
      .sort((a, b) => a.number - b.number);
  }

  get(number: number): Generation | undefined {
    const file = path.join(this.dir, String(number), 'config.json');
    return existsSync(file) ? GenerationSchema.parse(JSON.parse(readFileSync(file, 'utf8'))) : undefined;
  }

  /** The generation the profile points to, if any. */
  current(): Generation | undefined {
    try {
      return this.get(Number(path.basename(readlinkSync(this.profile))));
    } catch {
      return undefined;
    }
  }

  /** The directory of generation `number` (whether or not it exists). */
  dirOf(number: number): string {
    return path.join(this.dir, String(number));
  }

  /** Creates the next generation (complete before it gets its number); `write` adds files to its directory first. */
  create(generation: Omit<Generation, 'number' | 'createdAt' | 'deactivate'> & { deactivate?: string | null }, write?: (dir: string) => void): Generation {
    mkdirSync(this.dir, { recursive: true });
    const number = Math.max(0, ...readdirSync(this.dir).filter((entry) => /^\d+$/.test(entry)).map(Number)) + 1;
    const full: Generation = { ...generation, deactivate: generation.deactivate ?? null, number, createdAt: Date.now() };
    const temp = path.join(this.dir, `.${number}.tmp`);
    rmSync(temp, { recursive: true, force: true });
    mkdirSync(temp);
    writeFileSync(path.join(temp, 'config.json'), `${JSON.stringify(full, null, 2)}\n`);
    symlinkSync(generation.location, path.join(temp, 'system'));
    write?.(temp);
    renameSync(temp, path.join(this.dir, String(number)));
    return full;
  }

  /** Points the profile at `number`, atomically. */
  switchTo(number: number): void {
    const temp = `${this.profile}.tmp`;
    rmSync(temp, { force: true });
    symlinkSync(path.join('generations', String(number)), temp);
    renameSync(temp, this.profile);
  }

  /** Removes the profile: no generation is active (a stopped agent). The generations stay until GC. */
  unlinkProfile(): void {
    rmSync(this.profile, { force: true });
  }

  remove(number: number): void {
    rmSync(path.join(this.dir, String(number)), { recursive: true, force: true });
  }
}
