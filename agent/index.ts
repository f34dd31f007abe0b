/** The agent: enrollment, the follow-the-graph loop, generations, local rollback and GC. */
export { Agent, UnverifiedAnswerError, type AgentOptions, type RoundResult } from './agent.js';
export { agentPaths, readAgentState, type AgentState } from './state.js';
export { AgentBusyError } from './state-lock.js';
export { collectFacts, nixSystem } from './facts.js';
export { Generations, type Generation } from './generations.js';
export { materializeStorePath, removeStaleTemps } from './materialize.js';
export type { AgentEvent } from './events.js';
