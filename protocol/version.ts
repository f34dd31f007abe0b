/**
 * Ferry's version, one for every part: what `ferry --version` prints, what
 * a coordinator answers to `info` and `hello`, and the `agentVersion` fact
 * an agent reports. Equal to package.json's `version` (tested); kept as a
 * constant because the CLI bundle and the agent run without package.json
 * at a known path.
 */
export const FERRY_VERSION = '0.1.0';
