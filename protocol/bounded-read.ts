/** Reading a whole HTTP body (request or reply) with a bound that holds whatever the other side sends. */

/**
 * The bytes of `body`, or undefined once they pass `limit`: reading stops
 * there and the stream is cancelled, so a body of any length (declared or
 * chunked) holds at most `limit` bytes in memory. The caller says why.
 */
export async function readAtMost(body: ReadableStream<Uint8Array> | null, limit: number): Promise<Uint8Array | undefined> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (body) {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        await reader.cancel().catch(() => undefined);
        return undefined;
      }
      chunks.push(value);
    }
  }
  return new Uint8Array(Buffer.concat(chunks, total));
}
