import { parseArgs } from "node:util";
import { parseDurationSeconds } from "../config/duration.js";

/** A usage error: exit code 2 and one line, as scripts expect. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/**
 * One flag, described once: the parser reads `type`/`multiple`, `--help` prints the rest, and the
 * usage line is generated from it. Nothing about a flag is written anywhere else.
 */
export interface FlagSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  /** What the flag means, one sentence for `--help`. */
  description: string;
  /** Placeholder for the value in usage and help: DIR, ID, DURATION. */
  value?: string;
  /** Refused as a usage error when absent (checked by parseCommandArgs). */
  required?: boolean;
  /** What applies when the flag is absent, as the operator would write it. */
  default?: string;
  /** The environment variable read when the flag is absent. */
  env?: string;
}

export type OptionSpec = Record<string, FlagSpec>;

export type ArgValues = Record<string, string | boolean | string[] | undefined>;

export interface Command {
  /** e.g. "token create" */
  name: string;
  summary: string;
  options: OptionSpec;
  /** The one operand the command takes after its flags (e.g. TOKEN), stored in the values under `name`. */
  operand?: { name: string; value: string; description: string };
  /** More lines for `--help` after the options (environment, notes), when a command has them. */
  notes?: () => string[];
  run(values: ArgValues): Promise<number>;
}

export const HELP_FLAG: FlagSpec = { type: "boolean", description: "show this help" };

export function parseCommandArgs(cmd: Command, argv: string[]): ArgValues {
  let values: ArgValues;
  try {
    const options = Object.fromEntries(
      Object.entries(cmd.options).map(([name, f]) => [name, { type: f.type, ...(f.multiple ? { multiple: true } : {}) }]),
    );
    const parsed = parseArgs({ args: argv, options: { ...options, help: { type: "boolean", short: "h" } }, strict: true, allowPositionals: true });
    values = parsed.values as ArgValues;
    if (parsed.positionals.length > (cmd.operand ? 1 : 0)) throw new Error(`unexpected argument '${parsed.positionals.at(-1)}'`);
    if (cmd.operand && parsed.positionals[0] !== undefined) values[cmd.operand.name] = parsed.positionals[0];
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split("\n")[0]} (see 'hallmark ${cmd.name} --help')`);
  }
  if (values.help) return values;
  if (cmd.operand && values[cmd.operand.name] === undefined) {
    throw new UsageError(`${cmd.operand.value} is required (see 'hallmark ${cmd.name} --help')`);
  }
  for (const [name, f] of Object.entries(cmd.options)) {
    const v = values[name];
    if (f.required && (v === undefined || v === "" || (Array.isArray(v) && v.length === 0))) {
      throw new UsageError(`--${name} is required (see 'hallmark ${cmd.name} --help')`);
    }
  }
  return values;
}

export function requireString(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v.length === 0) throw new UsageError(`--${name} is required`);
  return v;
}

export function optionalString(values: Record<string, unknown>, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

export function stringList(values: Record<string, unknown>, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : [];
}

/** A duration flag's value (90s, 10m, 1h) in seconds; anything else is a usage error naming the flag. */
export function seconds(value: string, flag: string): number {
  const s = parseDurationSeconds(value);
  if (s === undefined) throw new UsageError(`--${flag}: '${value}' is not a duration (e.g. 90s, 10m, 1h)`);
  return s;
}
