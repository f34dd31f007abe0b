/**
 * The agent's metrics as a node_exporter textfile (`ferry agent run
 * --metrics-textfile PATH`, for node_exporter's textfile collector): what
 * the last deployment was and how it went, how long it took and what it
 * fetched, and the health of what runs. Rewritten after each deployment
 * and health transition, atomically (a temp file in the
 * same directory, then a rename), so the collector never reads half a file.
 */
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Health } from '../protocol/api/fleet.js';

/** One deployment, as the textfile reports it. */
export interface DeploymentMetrics {
  configId: string;
  /** How the round ended: active, rolled-back, failed. */
  result: string;
  seconds: number;
  /** Bytes the fetch copied from the coordinator (0 from a bundle). */
  fetchedBytes: number;
  /** The generation current afterwards (null: none). */
  generation: number | null;
}

export class MetricsTextfile {
  private readonly registry = new Registry();
  private readonly result: Gauge<'config' | 'result'>;
  private readonly duration: Gauge;
  private readonly finishedAt: Gauge;
  private readonly lastFetched: Gauge;
  private readonly fetched: Counter;
  private readonly generation: Gauge;
  private readonly health: Gauge<'config' | 'health'>;

  constructor(readonly file: string) {
    const registers = [this.registry];
    this.result = new Gauge({ name: 'ferry_agent_deployment', help: 'The last deployment: its config and how it ended (active, rolled-back, failed), always 1', labelNames: ['config', 'result'], registers });
    this.duration = new Gauge({ name: 'ferry_agent_last_deploy_duration_seconds', help: 'How long the last deployment took, fetch to health check', registers });
    this.finishedAt = new Gauge({ name: 'ferry_agent_last_deploy_timestamp_seconds', help: 'When the last deployment ended (Unix time)', registers });
    this.lastFetched = new Gauge({ name: 'ferry_agent_last_deploy_fetched_bytes', help: 'Bytes the last deployment fetched from the coordinator', registers });
    this.fetched = new Counter({ name: 'ferry_agent_fetched_bytes_total', help: 'Bytes fetched from the coordinator since the agent started', registers });
    this.generation = new Gauge({ name: 'ferry_agent_generation', help: 'The current generation number (0: none)', registers });
    this.health = new Gauge({ name: 'ferry_agent_health', help: "The running config's health under its periodic check (healthy, degraded), always 1; absent: not checked", labelNames: ['config', 'health'], registers });
  }

  /** Records the health of the config that runs (its periodic check) and rewrites the file; throws as `record` does. */
  async recordHealth(configId: string, health: Health): Promise<void> {
    this.health.reset();
    this.health.set({ config: configId, health }, 1);
    await this.write();
  }

  /** Records `deployment` and rewrites the file; throws what writing it throws (the file is then as it was). */
  async record(deployment: DeploymentMetrics, now = Date.now()): Promise<void> {
    this.result.reset();
    this.result.set({ config: deployment.configId, result: deployment.result }, 1);
    this.duration.set(deployment.seconds);
    this.finishedAt.set(Math.floor(now / 1000));
    this.lastFetched.set(deployment.fetchedBytes);
    this.fetched.inc(deployment.fetchedBytes);
    this.generation.set(deployment.generation ?? 0);
    // Health is of one config: another deployment's is unknown until its check says.
    if (deployment.result !== 'rolled-back' && deployment.result !== 'failed') this.health.reset();
    await this.write();
  }

  private async write(): Promise<void> {
    const text = await this.registry.metrics();
    // node_exporter reads *.prom files only: the temp name is not one of them.
    const temp = path.join(path.dirname(this.file), `.${path.basename(this.file)}.${process.pid}.tmp`);
    writeFileSync(temp, text, { mode: 0o644 });
    renameSync(temp, this.file);
  }
}
