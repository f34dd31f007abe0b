/**
 * Bounds of `--where` selectors (coordinator/domain/selectors.ts parses
 * them): shared by the API's input schemas and the parser, so what a
 * request may carry and what the coordinator will parse cannot drift.
 */

/** Clauses in one selector (ANDed). */
export const MAX_WHERE_CLAUSES = 16;
/** Characters in one clause, as given. */
export const MAX_WHERE_CLAUSE_LENGTH = 256;
/** Values in one clause's set (`labels.site=a,b,c`). */
export const MAX_WHERE_VALUES = 32;
/** Characters in one glob value (`barn-*`); a longer value is refused when it holds `*` or `?`. */
export const MAX_GLOB_LENGTH = 128;
/**
 * A glob is matched against values at most this long; a longer value (a
 * fact can be a long string) never matches a glob. With MAX_GLOB_LENGTH,
 * this bounds one comparison to ~128 × 4096 character steps.
 */
export const MAX_GLOB_SUBJECT_LENGTH = 4096;
