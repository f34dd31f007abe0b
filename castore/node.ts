/** castore nodes and digests are part of the wire protocol: defined in protocol/, used here. */
export * from '../protocol/castore-node.js';
