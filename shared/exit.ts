// How both binaries end a command: once it has said what it found, not once nothing is left
// referenced. A TLS handshake that gRPC began with an agent that is frozen (SIGSTOP, a hung machine)
// holds its socket until that agent answers, and closing the channel does not end it: a command that
// had given up on the agent within its bound would otherwise never exit.

/** Resolves once what was written to `stream` so far is handed to the OS (or the stream is gone). */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) resolve();
    else stream.write("", () => resolve());
  });
}

/** Exits with process.exitCode once stdout and stderr are flushed. */
export async function exitOnceFlushed(): Promise<never> {
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  process.exit();
}
