import { describe, expect, it } from 'vitest';
import { commandGroups, commandsOfGroup, loadAllCommands } from './commands.js';

describe('command groups', () => {
  it('reach every command: each is in the group its first word names, and only there', async () => {
    const all = await loadAllCommands();
    expect(all.length).toBeGreaterThan(40);
    const reached = (await Promise.all(commandGroups.map((group) => commandsOfGroup(group.name)))).flat();
    expect(new Set(reached)).toEqual(new Set(all));
    expect(reached).toHaveLength(all.length);
    for (const group of commandGroups) expect((await commandsOfGroup(group.name)).length, group.name).toBeGreaterThan(0);
  });

  it('knows no commands for an unknown group', async () => {
    expect(await commandsOfGroup('nonsense')).toEqual([]);
  });
});
