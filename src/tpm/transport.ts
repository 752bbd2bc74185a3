import { open } from "node:fs/promises";
import { Socket, connect } from "node:net";
import { HallmarkError } from "../errors.js";

/** One TPM command in, its response out; commands are serialised by the client. */
export interface TpmTransport {
  send(command: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

const TPM_SEND_COMMAND = 8;
const TIMEOUT_MS = 30_000;

/**
 * "swtpm:host=127.0.0.1,port=2321", "device:/dev/tpmrm0" or a device path. swtpm speaks the
 * Microsoft simulator framing on its data socket (u32 TPM_SEND_COMMAND, u8 locality, u32 length,
 * command; then u32 length, response, u32 0).
 */
export async function openTransport(spec: string): Promise<TpmTransport> {
  if (spec.startsWith("swtpm:")) {
    const opts = Object.fromEntries(spec.slice(6).split(",").map((kv) => kv.split("=") as [string, string]));
    const port = Number(opts.port ?? 2321);
    if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new HallmarkError("invalid_request", `bad swtpm port in '${spec}'`);
    return SwtpmTransport.connect(opts.host ?? "127.0.0.1", port);
  }
  const path = spec.startsWith("device:") ? spec.slice(7) : spec;
  if (!path.startsWith("/")) throw new HallmarkError("invalid_request", `unknown TPM '${spec}' (swtpm:host=H,port=P or /dev/tpmrm0)`);
  return DeviceTransport.open(path);
}

class SwtpmTransport implements TpmTransport {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.waiter?.();
    });
    const fail = (e?: Error) => {
      this.failure = new HallmarkError("unavailable", `the TPM connection closed${e ? `: ${e.message}` : ""}`);
      this.waiter?.();
    };
    socket.on("error", fail);
    socket.on("close", () => fail());
  }

  static connect(host: string, port: number): Promise<SwtpmTransport> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port }, () => resolve(new SwtpmTransport(s)));
      s.once("error", (e) => reject(new HallmarkError("unavailable", `cannot reach swtpm at ${host}:${port}: ${e.message}`)));
    });
  }

  private async take(n: number): Promise<Buffer> {
    const deadline = Date.now() + TIMEOUT_MS;
    while (this.buffered.length < n) {
      if (this.failure) throw this.failure;
      if (Date.now() > deadline) throw new HallmarkError("unavailable", "the TPM did not answer in time");
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 1000).unref();
      });
    }
    const out = this.buffered.subarray(0, n);
    this.buffered = this.buffered.subarray(n);
    return out;
  }

  async send(command: Buffer): Promise<Buffer> {
    const head = Buffer.alloc(9);
    head.writeUInt32BE(TPM_SEND_COMMAND, 0);
    head.writeUInt8(0, 4);
    head.writeUInt32BE(command.length, 5);
    this.socket.write(Buffer.concat([head, command]));
    const len = (await this.take(4)).readUInt32BE(0);
    const response = Buffer.from(await this.take(len));
    await this.take(4); // trailing u32 0
    return response;
  }

  async close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
  }
}

class DeviceTransport implements TpmTransport {
  private constructor(private readonly fh: import("node:fs/promises").FileHandle) {}

  static async open(path: string): Promise<DeviceTransport> {
    try {
      return new DeviceTransport(await open(path, "r+"));
    } catch (e) {
      throw new HallmarkError("unavailable", `cannot open ${path}: ${(e as Error).message}`);
    }
  }

  async send(command: Buffer): Promise<Buffer> {
    await this.fh.write(command, 0, command.length, null);
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, null);
    return buf.subarray(0, bytesRead);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
