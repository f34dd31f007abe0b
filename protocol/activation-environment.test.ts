import { describe, expect, it } from 'vitest';
import { ActivationEnvironmentSchema, assertActivationEnvironment, environmentKeyRefusal } from './activation-environment.js';

describe('activation environment keys', () => {
  it('defect 8: refuses what changes how programs load or run, and what the agent sets itself', () => {
    for (const key of [
      'LD_PRELOAD', 'LD_LIBRARY_PATH', 'LD_AUDIT', 'LD_DEBUG_OUTPUT', 'DYLD_INSERT_LIBRARIES', 'NIX_LD', 'NIX_LD_LIBRARY_PATH',
      'GLIBC_TUNABLES', 'GCONV_PATH', 'HOSTALIASES', 'LOCALDOMAIN', 'RES_OPTIONS', 'MALLOC_CHECK_', 'MALLOC_TRACE',
      'BASH_ENV', 'ENV', 'IFS', 'SHELLOPTS', 'PS4', 'BASH_XTRACEFD',
      'NODE_OPTIONS', 'PYTHONPATH', 'PYTHONSTARTUP', 'PERL5OPT', 'PERL5LIB', 'RUBYOPT', 'JAVA_TOOL_OPTIONS', 'LUA_INIT',
      'FERRY_CONFIG_ID', 'FERRY_ANYTHING', 'PATH',
      'lower', '1ABC', 'A-B', '',
    ]) {
      expect(environmentKeyRefusal(key), key).toBeDefined();
    }
  });

  it('defect 8: allows ordinary settings', () => {
    for (const key of ['HOME', 'TZ', 'LANG', 'LC_ALL', 'TMPDIR', 'SSL_CERT_FILE', 'NIX_PATH', 'SERVICE_PORT', 'LDAP_URI', '_PRIVATE', 'PATHS', 'ENVIRONMENT']) {
      expect(environmentKeyRefusal(key), key).toBeUndefined();
    }
  });

  it('defect 8: names the key, refuses NUL in values, and reports every bad key through zod', () => {
    expect(() => assertActivationEnvironment({ GREETING: 'hi', LD_PRELOAD: '/tmp/evil.so' })).toThrow(/^activation\.environment: LD_PRELOAD is refused: it makes the dynamic loader/);
    expect(() => assertActivationEnvironment({ GREETING: 'a\0b' })).toThrow(/GREETING is refused: the value contains a NUL/);
    const parsed = ActivationEnvironmentSchema.safeParse({ LD_PRELOAD: 'x', PATH: '/bin', OK: 'y' });
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues.map((issue) => issue.path.join('.'))).toEqual(['LD_PRELOAD', 'PATH']);
  });
});
