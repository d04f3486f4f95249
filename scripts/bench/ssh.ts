// The bench's own SSH server on loopback, for the comparisons with what SSH-based tools do: a
// throwaway host key and client key in the bench's temp dir, an sshd_config written for it, on a free
// port. Nothing of the machine's own SSH setup is read or changed (only /run/sshd, sshd's privilege
// separation folder, is made when missing).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

export const SSHD = '/usr/sbin/sshd';

export interface Ssh {
  readonly port: number;
  /** `root@127.0.0.1` (or this user's name when not root) */
  readonly target: string;
  /** the client command with its options, without the target: `ssh -F /dev/null -p … -i … -o …` */
  readonly command: readonly string[];
  /** `command` as one string for `rsync -e` */
  readonly rsh: string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (free when asked; the server takes it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Starts sshd on loopback with keys in `dir`; throws (with the reason) when it cannot. */
export async function startSsh(dir: string): Promise<Ssh> {
  if (!fs.existsSync(SSHD)) throw new Error(`${SSHD} not found (apt-get install -y openssh-server)`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  if (process.getuid?.() === 0 && !fs.existsSync('/run/sshd')) fs.mkdirSync('/run/sshd', { mode: 0o755 });
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKey = path.join(dir, 'client_ed25519');
  for (const key of [hostKey, clientKey]) {
    const r = await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'quick-migrate-bench', '-f', key], { reject: false, stdin: 'ignore' });
    if (r.exitCode !== 0) throw new Error(`ssh-keygen: ${String(r.stderr)}`);
  }
  const authorized = path.join(dir, 'authorized_keys');
  fs.copyFileSync(`${clientKey}.pub`, authorized);
  fs.chmodSync(authorized, 0o600);
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin prohibit-password',
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      // the keys lie under /tmp (world-writable): StrictModes would refuse them; the server is the bench's own, on loopback
      'StrictModes no',
      'PrintMotd no',
      'UseDNS no',
      'MaxStartups 200:30:400',
      'MaxSessions 100',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const test = await execa(SSHD, ['-t', '-f', config], { reject: false, stdin: 'ignore' });
  if (test.exitCode !== 0) throw new Error(`sshd -t: ${String(test.stderr).trim()}`);
  const child: ResultPromise = execa(SSHD, ['-D', '-e', '-f', config], { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe', buffer: { stderr: true } });
  const command = [
    'ssh',
    '-F', '/dev/null',
    '-p', String(port),
    '-i', clientKey,
    '-o', 'IdentitiesOnly=yes',
    '-o', 'BatchMode=yes',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
  ];
  const target = `${os.userInfo().username}@127.0.0.1`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await child;
  };
  // up when one login works
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await execa(command[0] as string, [...command.slice(1), target, 'true'], { reject: false, stdin: 'ignore', timeout: 5000 });
    if (r.exitCode === 0) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      const out = await child;
      throw new Error(`sshd on 127.0.0.1:${port} did not let the bench in: ${String(r.stderr).trim()} ${String(out.stderr ?? '').trim()}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  return { port, target, command, rsh: command.join(' '), stop };
}
