/**
 * Where the viewer lives on the coordinator (and on the offline server). Its own
 * module so that the CLI can name it without loading the server.
 */
export const VIEWER_PATH = '/viewer';
