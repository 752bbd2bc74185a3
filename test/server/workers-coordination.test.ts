import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { CoordinationHub, type WorkerLink } from "../../src/server/workers/coordination-hub.js";
import { waitFor } from "../helpers/kept-alive.js";
import { tempDir } from "../helpers/tmp.js";

/**
 * The workers' store coordination across real processes and a real IPC channel: the hub (here,
 * in the test process, as in the primary) and workerCoordination in child processes (the built
 * dist/ module). Locks never overlap across processes; a process killed holding a lock releases
 * it; a committed-write notice reaches the other process and not the writer twice.
 */
const MODULE = new URL("../../dist/src/server/workers/worker-coordination.js", import.meta.url).href;
const work = tempDir("workers-coordination");
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  work.remove();
});

/** A child holding `rounds` lock turns at once, each writing enter/exit lines around a short wait; HOLD=1 never releases. */
const CHILD = `
  const { workerCoordination, processChannel } = await import(process.env.MODULE);
  const { appendFileSync } = await import("node:fs");
  const c = workerCoordination(processChannel());
  c.onChange("entries", () => process.send({ heard: "entries" }));
  process.on("message", (m) => { if (m === "announce") c.announce("entries"); });
  const turn = () => c.exclusively("ca-rotation", async () => {
    appendFileSync(process.env.LOG, "enter " + process.pid + "\\n");
    await new Promise((r) => setTimeout(r, process.env.HOLD ? 1e9 : 3));
    appendFileSync(process.env.LOG, "exit " + process.pid + "\\n");
  });
  await Promise.all(Array.from({ length: Number(process.env.ROUNDS) }, turn));
  process.send({ done: true });
`;

function startChild(hub: CoordinationHub, env: Record<string, string>, onMessage: (m: unknown) => void = () => undefined): ChildProcess {
  const child = spawn(process.execPath, ["--input-type=module", "-e", CHILD], { env: { ...process.env, MODULE, ...env }, stdio: ["ignore", "inherit", "inherit", "ipc"] });
  children.push(child);
  const link: WorkerLink = { id: child.pid!, send: (m) => void child.send(m) };
  hub.join(link);
  child.on("message", (m: unknown) => {
    if (!hub.handle(link, m)) onMessage(m);
  });
  child.once("exit", () => hub.leave(link));
  return child;
}

const lines = (log: string) => (existsSync(log) ? readFileSync(log, "utf8").trim().split("\n").filter(Boolean) : []);

describe("workers' store coordination over IPC", () => {
  it("one holder of a lock at a time across processes", async () => {
    const hub = new CoordinationHub(pino({ level: "silent" }));
    const log = join(work.path, "turns.log");
    writeFileSync(log, "");
    let done = 0;
    const onMessage = (m: unknown) => void ((m as { done?: boolean }).done && done++);
    const [a, b] = [startChild(hub, { LOG: log, ROUNDS: "15" }, onMessage), startChild(hub, { LOG: log, ROUNDS: "15" }, onMessage)];
    await waitFor(() => done === 2, "both children's turns", 20_000);
    const turns = lines(log);
    expect(turns).toHaveLength(60);
    // enter X, exit X, enter Y, exit Y…: never two holders.
    for (let i = 0; i < turns.length; i += 2) {
      expect(turns[i]).toMatch(/^enter /);
      expect(turns[i + 1]).toBe(turns[i]!.replace("enter", "exit"));
    }
    // Both took turns.
    expect(new Set(turns.map((t) => t.split(" ")[1]))).toEqual(new Set([String(a.pid), String(b.pid)]));
    a.kill();
    b.kill();
  });

  it("a process killed holding the lock releases it to the one waiting", async () => {
    const hub = new CoordinationHub(pino({ level: "silent" }));
    const log = join(work.path, "held.log");
    writeFileSync(log, "");
    const holder = startChild(hub, { LOG: log, ROUNDS: "1", HOLD: "1" });
    await waitFor(() => lines(log).length === 1, "the holder's turn");
    const waiter = startChild(hub, { LOG: log, ROUNDS: "1" });
    // The waiter asks and is kept waiting while the holder lives.
    await new Promise((r) => setTimeout(r, 300));
    expect(lines(log)).toEqual([`enter ${holder.pid}`]);
    holder.kill("SIGKILL");
    await waitFor(() => lines(log).length === 3, "the waiter's turn");
    expect(lines(log)).toEqual([`enter ${holder.pid}`, `enter ${waiter.pid}`, `exit ${waiter.pid}`]);
    waiter.kill();
  });

  it("a write announced in one process is heard in the other, and once in the writer", async () => {
    const hub = new CoordinationHub(pino({ level: "silent" }));
    const heard = new Map<string, number>();
    const count = (name: string) => (m: unknown) => {
      if ((m as { heard?: string }).heard === "entries") heard.set(name, (heard.get(name) ?? 0) + 1);
    };
    const log = join(work.path, "none.log");
    const a = startChild(hub, { LOG: log, ROUNDS: "0" }, count("a"));
    const b = startChild(hub, { LOG: log, ROUNDS: "0" }, count("b"));
    await new Promise((r) => setTimeout(r, 300));
    a.send("announce");
    await waitFor(() => heard.get("b") === 1, "the notice in the other process");
    expect(heard.get("a")).toBe(1);
    a.kill();
    b.kill();
  });
});
