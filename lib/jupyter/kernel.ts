// A minimal Jupyter client: starts a kernel from the project's kernelspec (the same launcher JupyterLab uses) and
// talks the Jupyter messaging protocol over ZeroMQ (wire protocol 5.3, HMAC-SHA256 signatures). Written in
// TypeScript so running notebooks headlessly needs no Python; `zeromq` comes with tslab.
import { ChildProcess, spawn } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as zmq from 'zeromq';
import { childEnv } from '../settings/context';
import { PROJECT_ROOT } from '../settings/paths';

export const DEFAULT_KERNEL = 'cifar10-tslab';

export interface KernelSpec {
  name: string;
  /** The kernelspec folder (Jupyter's {resource_dir}). */
  dir: string;
  argv: string[];
  displayName: string;
  language: string;
  env: Record<string, string>;
}

/** The project's kernelspec folder, what `JUPYTER_PATH=<root>/jupyter` registers. */
export function kernelsDir(root: string = PROJECT_ROOT): string {
  return path.join(root, 'jupyter', 'kernels');
}

export function loadKernelSpec(name: string = DEFAULT_KERNEL, root: string = PROJECT_ROOT): KernelSpec {
  const dir = path.join(kernelsDir(root), name);
  const file = path.join(dir, 'kernel.json');
  let spec: any;
  try {
    spec = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: cannot read kernelspec ${name} (${(err as Error).message})`);
  }
  if (!Array.isArray(spec.argv) || spec.argv.length === 0 || !spec.argv.every((a: unknown) => typeof a === 'string')) {
    throw new Error(`${file}: "argv" must be a non-empty list of strings`);
  }
  return { name, dir, argv: spec.argv, displayName: spec.display_name ?? name, language: spec.language ?? '', env: spec.env ?? {} };
}

export interface ConnectionInfo {
  transport: 'tcp';
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: 'hmac-sha256';
  kernel_name: string;
}

export interface MessageHeader {
  msg_id: string;
  msg_type: string;
  session: string;
  username: string;
  date: string;
  version: string;
}

export interface JupyterMessage {
  header: MessageHeader;
  parent_header: Partial<MessageHeader>;
  metadata: Record<string, unknown>;
  content: any;
}

export class KernelDiedError extends Error {}
export class KernelTimeoutError extends Error {}

const DELIM = Buffer.from('<IDS|MSG>');

/** Ask the OS for `n` distinct free TCP ports on 127.0.0.1 (all held open together so they are distinct). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<net.Server>((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(s));
      }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Every started kernel until it is shut down, so an exiting runner can kill what is left. */
const liveKernels = new Set<Kernel>();
process.on('exit', () => {
  for (const k of liveKernels) k.killNow();
});

/** Kill every kernel this process started (synchronous; for signal handlers and exit paths). */
export function killAllKernels(): void {
  for (const k of liveKernels) k.killNow();
}

export interface StartOptions {
  spec?: KernelSpec;
  /**
   * Environment of the kernel (scripts pass their environment; default: the runtime context's, lib/settings/context.ts).
   * The kernelspec's env is applied on top, as Jupyter does.
   */
  env?: NodeJS.ProcessEnv;
  /** Working directory to start the launcher in; Jupyter uses the notebook's folder (the launcher moves to the root). */
  cwd?: string;
  startupTimeoutMs?: number;
  /** Kernel stream output as it arrives (e.g. echo to the terminal). */
  onStream?: (name: string, text: string) => void;
}

export class Kernel {
  readonly pid: number;
  readonly session = crypto.randomUUID();
  kernelInfo: any = null;
  /** Resolves when the kernel process has exited (and been reaped). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private hasExited = false;
  private stderrTail = '';
  private readonly shell: zmq.Dealer;
  private readonly control: zmq.Dealer;
  private readonly stdin: zmq.Dealer;
  private readonly iopub: zmq.Subscriber;
  private readonly hb: zmq.Request;
  private readonly replies = new Map<string, (m: JupyterMessage) => void>();
  private readonly iopubHandlers = new Map<string, (m: JupyterMessage) => void>();
  private closed = false;

  private constructor(
    private readonly proc: ChildProcess,
    private readonly conn: ConnectionInfo,
    private readonly connectionFile: string,
    private readonly onStream?: (name: string, text: string) => void,
  ) {
    this.pid = proc.pid!;
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        this.hasExited = true;
        resolve({ code, signal });
      }),
    );
    proc.stderr?.on('data', (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString()).slice(-4000);
    });
    proc.stdout?.on('data', () => {}); // drain; tslab logs almost nothing outside cells
    const addr = (port: number) => `${conn.transport}://${conn.ip}:${port}`;
    const routingId = crypto.randomBytes(8).toString('hex');
    this.shell = new zmq.Dealer({ routingId, linger: 0 });
    this.control = new zmq.Dealer({ routingId, linger: 0 });
    this.stdin = new zmq.Dealer({ routingId, linger: 0 });
    this.iopub = new zmq.Subscriber({ linger: 0 });
    this.hb = new zmq.Request({ linger: 0, receiveTimeout: 2000, sendTimeout: 2000 });
    this.iopub.subscribe();
    this.shell.connect(addr(conn.shell_port));
    this.control.connect(addr(conn.control_port));
    this.stdin.connect(addr(conn.stdin_port));
    this.iopub.connect(addr(conn.iopub_port));
    this.hb.connect(addr(conn.hb_port));
    this.pump(this.shell, (m) => this.replies.get(m.parent_header.msg_id ?? '')?.(m));
    this.pump(this.control, (m) => this.replies.get(m.parent_header.msg_id ?? '')?.(m));
    this.pump(this.iopub, (m) => {
      if (m.header.msg_type === 'stream') this.onStream?.(m.content.name, m.content.text);
      this.iopubHandlers.get(m.parent_header.msg_id ?? '')?.(m);
    });
  }

  /** Spawn the kernelspec's argv (with {connection_file} and {resource_dir} filled in) and wait until it answers. */
  static async start(opts: StartOptions = {}): Promise<Kernel> {
    const spec = opts.spec ?? loadKernelSpec();
    const ports = await freePorts(5);
    const conn: ConnectionInfo = {
      transport: 'tcp',
      ip: '127.0.0.1',
      shell_port: ports[0],
      iopub_port: ports[1],
      stdin_port: ports[2],
      control_port: ports[3],
      hb_port: ports[4],
      key: crypto.randomBytes(32).toString('hex'),
      signature_scheme: 'hmac-sha256',
      kernel_name: spec.name,
    };
    const connectionFile = path.join(os.tmpdir(), `kernel-${process.pid}-${crypto.randomBytes(6).toString('hex')}.json`);
    fs.writeFileSync(connectionFile, JSON.stringify(conn, null, 1), { mode: 0o600 });
    const argv = spec.argv.map((a) => a.replace(/\{connection_file\}/g, connectionFile).replace(/\{resource_dir\}/g, spec.dir));
    // detached: the kernel leads its own process group, so shutdown can kill anything it spawned; and a Ctrl-C in
    // the terminal reaches only the runner, which then shuts the kernel down in order.
    const proc = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd ?? PROJECT_ROOT,
      env: { ...(opts.env ?? childEnv()), ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const spawned = await new Promise<Error | null>((resolve) => {
      proc.once('spawn', () => resolve(null));
      proc.once('error', (err) => resolve(err));
    });
    if (spawned) {
      fs.rmSync(connectionFile, { force: true });
      throw new KernelDiedError(`cannot start kernel ${spec.name} (${argv.join(' ')}): ${spawned.message}`);
    }
    const kernel = new Kernel(proc, conn, connectionFile, opts.onStream);
    liveKernels.add(kernel);
    try {
      await kernel.waitReady(opts.startupTimeoutMs ?? 60_000);
    } catch (err) {
      await kernel.shutdown({ graceMs: 0 });
      throw err;
    }
    return kernel;
  }

  /** Kernel stderr (outside cells), for diagnosing a kernel that died. */
  get processStderr(): string {
    return this.stderrTail;
  }

  private sign(parts: string[]): string {
    const h = crypto.createHmac('sha256', this.conn.key);
    for (const p of parts) h.update(p);
    return h.digest('hex');
  }

  private async pump(sock: zmq.Dealer | zmq.Subscriber, handle: (m: JupyterMessage) => void): Promise<void> {
    try {
      for await (const frames of sock) {
        const m = this.decode(frames);
        if (m) handle(m);
      }
    } catch {
      // the socket was closed: shutting down
    }
  }

  private decode(frames: Buffer[]): JupyterMessage | undefined {
    const i = frames.findIndex((f) => f.equals(DELIM));
    if (i < 0 || frames.length < i + 6) return undefined;
    const parts = frames.slice(i + 2, i + 6).map((f) => f.toString('utf8'));
    if (frames[i + 1].toString() !== this.sign(parts)) return undefined; // not from our kernel: ignore
    const [header, parent_header, metadata, content] = parts.map((p) => JSON.parse(p));
    return { header, parent_header, metadata, content };
  }

  /** Header + signed frames of a new message; callers register for the reply under `id` before sending. */
  private frame(msgType: string, content: unknown): { id: string; frames: (Buffer | string)[] } {
    const header: MessageHeader = {
      msg_id: crypto.randomUUID(),
      msg_type: msgType,
      session: this.session,
      username: 'runner',
      date: new Date().toISOString(),
      version: '5.3',
    };
    const parts = [JSON.stringify(header), '{}', '{}', JSON.stringify(content)];
    return { id: header.msg_id, frames: [DELIM, this.sign(parts), ...parts] };
  }

  /** Reject when the process exits first, or after `ms`. */
  private guard<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new KernelTimeoutError(`${what}: no answer within ${ms / 1000} s`)), ms);
    });
    const died = this.exited.then(({ code, signal }) => {
      const tail = this.stderrTail.trim().split('\n').slice(-3).join(' | ');
      throw new KernelDiedError(`kernel died (${signal ?? `exit code ${code}`}) during ${what}${tail ? `: ${tail}` : ''}`);
    });
    return Promise.race([p, timeout, died]).finally(() => clearTimeout(timer));
  }

  private async request(sock: zmq.Dealer, msgType: string, content: unknown, ms: number): Promise<JupyterMessage> {
    const { id, frames } = this.frame(msgType, content);
    const reply = new Promise<JupyterMessage>((resolve) => this.replies.set(id, resolve));
    try {
      await sock.send(frames);
      return await this.guard(reply, ms, msgType);
    } finally {
      this.replies.delete(id);
    }
  }

  /**
   * kernel_info round-trip on shell, then repeat until iopub delivers the status of one of them: a SUB socket
   * silently drops what is published before its subscription reaches the kernel (ZeroMQ "slow joiner").
   */
  private async waitReady(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    const left = () => Math.max(1, deadline - Date.now());
    this.kernelInfo = (await this.request(this.shell, 'kernel_info_request', {}, left())).content;
    for (;;) {
      let seen!: () => void;
      const onIopub = new Promise<void>((r) => (seen = r));
      const { id, frames } = this.frame('kernel_info_request', {});
      this.iopubHandlers.set(id, () => seen());
      await this.shell.send(frames);
      const ok = await this.guard(
        Promise.race([onIopub.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 200))]),
        left(),
        'kernel startup (iopub)',
      );
      this.iopubHandlers.delete(id);
      if (ok) break;
    }
    await this.heartbeat(Math.min(5000, left()));
  }

  /** One heartbeat echo (the kernel's hb socket answers even while a cell runs). */
  async heartbeat(ms = 2000): Promise<void> {
    const ping = Buffer.from(crypto.randomUUID());
    const echo = (async () => {
      await this.hb.send(ping);
      const [pong] = await this.hb.receive();
      if (!pong.equals(ping)) throw new KernelDiedError('heartbeat: wrong echo');
    })();
    await this.guard(echo, ms, 'heartbeat');
  }

  /**
   * Run `code`; every iopub message of this request goes to `onIopub` (also ones arriving after the reply, e.g.
   * output written by a timer the cell left running). Resolves with the execute_reply content once the kernel is
   * idle again; rejects with KernelTimeoutError / KernelDiedError.
   */
  async execute(code: string, opts: { timeoutMs: number; onIopub: (m: JupyterMessage) => void }): Promise<any> {
    let idle!: () => void;
    const becameIdle = new Promise<void>((r) => (idle = r));
    let reply!: (m: JupyterMessage) => void;
    const replied = new Promise<JupyterMessage>((r) => (reply = r));
    const content = { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false, stop_on_error: true };
    const { id: msgId, frames } = this.frame('execute_request', content);
    // register before sending: the kernel may answer before send() resolves
    this.iopubHandlers.set(msgId, (m) => {
      if (m.header.msg_type === 'status' && m.content.execution_state === 'idle') idle();
      else opts.onIopub(m);
    });
    this.replies.set(msgId, reply);
    await this.shell.send(frames);
    try {
      const [r] = await this.guard(Promise.all([replied, becameIdle]), opts.timeoutMs, 'cell execution');
      return r.content;
    } finally {
      this.replies.delete(msgId);
    }
  }

  /** SIGINT, which tslab turns into interrupting the running cell. */
  interrupt(): void {
    if (!this.hasExited) process.kill(this.pid, 'SIGINT');
  }

  /** Kill the kernel's whole process group now (synchronous). */
  killNow(): void {
    for (const target of [-this.pid, this.pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }

  /**
   * shutdown_request on the control channel, wait up to `graceMs` for the process to exit, then SIGKILL its process
   * group; always closes the sockets and removes the connection file. Resolves once the process is reaped, so a
   * caller can rely on the pid being gone.
   */
  async shutdown(opts: { graceMs?: number } = {}): Promise<void> {
    const graceMs = opts.graceMs ?? 3000;
    if (!this.hasExited && graceMs > 0) {
      try {
        await this.request(this.control, 'shutdown_request', { restart: false }, graceMs);
        await Promise.race([this.exited, new Promise((r) => setTimeout(r, graceMs))]);
      } catch {
        // no answer or already dead: kill below
      }
    }
    this.killNow(); // also reaps helpers the kernel may have spawned into its group
    await this.exited;
    if (!this.closed) {
      this.closed = true;
      for (const s of [this.shell, this.control, this.stdin, this.iopub, this.hb]) s.close();
    }
    fs.rmSync(this.connectionFile, { force: true });
    liveKernels.delete(this);
  }
}
