import { parseArgs, type ParseArgsConfig } from "node:util";

/** A usage error: exit code 2 and one line, as scripts expect. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

export interface Command {
  /** e.g. "token create" */
  name: string;
  summary: string;
  usage: string;
  options: OptionSpec;
  run(values: Record<string, string | boolean | string[] | undefined>): Promise<number>;
}

export function parseCommandArgs(cmd: Command, argv: string[]): Record<string, string | boolean | string[] | undefined> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { ...cmd.options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    });
    return values as Record<string, string | boolean | string[] | undefined>;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split("\n")[0]} (see 'hallmark ${cmd.name} --help')`);
  }
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
