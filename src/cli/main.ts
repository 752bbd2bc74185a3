import "reflect-metadata";
import { isHallmarkError } from "../errors.js";
import { adminCommands } from "./admin-commands.js";
import { type Command, UsageError, parseCommandArgs } from "./args.js";
import { clientCommands } from "./client-commands.js";
import { opsCommands } from "./ops-commands.js";
import { serverCommand } from "./server-command.js";

const COMMANDS: Command[] = [serverCommand, ...adminCommands, ...opsCommands, ...clientCommands];

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "hallmark: SPIFFE attestation and issuance",
    "",
    "usage: hallmark <command> [options]   (hallmark <command> --help for its options)",
    "",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "exit codes: 0 success, 1 the operation failed, 2 usage error",
  ].join("\n");
}

/** Finds the command named by the first one or two words. */
function resolve(argv: string[]): { cmd: Command; rest: string[] } | undefined {
  const two = argv.slice(0, 2).join(" ");
  const byTwo = COMMANDS.find((c) => c.name === two);
  if (byTwo) return { cmd: byTwo, rest: argv.slice(2) };
  const byOne = COMMANDS.find((c) => c.name === argv[0]);
  return byOne ? { cmd: byOne, rest: argv.slice(1) } : undefined;
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(topHelp());
    return argv.length === 0 ? 2 : 0;
  }
  const found = resolve(argv);
  try {
    if (!found) {
      const group = COMMANDS.filter((c) => c.name.startsWith(`${argv[0]} `)).map((c) => c.name);
      throw new UsageError(
        group.length ? `'${argv.slice(0, 2).join(" ")}' is not a command; try: ${group.join(", ")}` : `unknown command '${argv[0]}' (see 'hallmark --help')`,
      );
    }
    const values = parseCommandArgs(found.cmd, found.rest);
    if (values.help) {
      console.log(`${found.cmd.summary}\n\nusage: ${found.cmd.usage}`);
      return 0;
    }
    return await found.cmd.run(values);
  } catch (e) {
    return report(e);
  }
}

/** One readable line, never a stack trace (HALLMARK_DEBUG=1 shows it). */
function report(e: unknown): number {
  if (process.env.HALLMARK_DEBUG === "1") console.error(e);
  if (e instanceof UsageError) {
    console.error(`hallmark: ${e.message}`);
    return 2;
  }
  if (isHallmarkError(e)) {
    console.error(`hallmark: ${e.code}: ${e.message.split("\n").join("; ")}`);
    return 1;
  }
  console.error(`hallmark: internal error: ${(e as Error)?.message ?? String(e)}`);
  return 1;
}
