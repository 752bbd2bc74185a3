import "reflect-metadata";
import { isHallmarkError } from "../errors.js";
import { adminCommands } from "./admin-commands.js";
import { federationCommands } from "./federation-commands.js";
import { agentCommand } from "./agent-command.js";
import { type Command, UsageError, parseCommandArgs } from "./args.js";
import { clientCommands } from "./client-commands.js";
import { commandHelp, commandsOfGroup, groupHelp, topHelp } from "./help.js";
import { logCommands } from "./log-commands.js";
import { opsCommands } from "./ops-commands.js";
import { storeCommands } from "./store-commands.js";
import { workloadCommands } from "./workload-commands.js";
import { serverCommand } from "./server-command.js";

const COMMANDS: Command[] = [serverCommand, agentCommand, ...adminCommands, ...federationCommands, ...opsCommands, ...storeCommands, ...clientCommands, ...workloadCommands, ...logCommands];

type Target = { kind: "command"; cmd: Command; rest: string[] } | { kind: "group"; group: string; rest: string[] };

/** Finds the command named by the first one or two words, or the group named by the first. */
function resolve(argv: readonly string[]): Target | undefined {
  const two = argv.slice(0, 2).join(" ");
  const byTwo = COMMANDS.find((c) => c.name === two);
  if (byTwo) return { kind: "command", cmd: byTwo, rest: argv.slice(2) };
  const byOne = COMMANDS.find((c) => c.name === argv[0]);
  if (byOne) return { kind: "command", cmd: byOne, rest: argv.slice(1) };
  const group = argv[0];
  return group && commandsOfGroup(COMMANDS, group).length ? { kind: "group", group, rest: argv.slice(1) } : undefined;
}

const isHelpFlag = (a: string | undefined) => a === "--help" || a === "-h";

/** `hallmark help [COMMAND | GROUP]`: the same text as `--help` on that command or group. */
function help(words: readonly string[]): number {
  if (words.length === 0) {
    console.log(topHelp(COMMANDS));
    return 0;
  }
  const found = resolve(words);
  if (!found || found.rest.length > 0) throw new UsageError(`no command '${words.join(" ")}' (see 'hallmark --help')`);
  console.log(found.kind === "command" ? commandHelp(found.cmd) : groupHelp(COMMANDS, found.group));
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0) {
    console.log(topHelp(COMMANDS));
    return 2;
  }
  try {
    if (isHelpFlag(argv[0])) return help([]);
    if (argv[0] === "help") return help(argv.slice(1));
    const found = resolve(argv);
    if (!found) throw new UsageError(`unknown command '${argv[0]}' (see 'hallmark --help')`);
    if (found.kind === "group") {
      const [next] = found.rest;
      if (isHelpFlag(next)) return help([found.group]);
      const subs = commandsOfGroup(COMMANDS, found.group).map((c) => c.name);
      throw new UsageError(
        `${next === undefined ? `'${found.group}' needs a subcommand` : `'${found.group} ${next}' is not a command`}; try: ${subs.join(", ")} (see 'hallmark ${found.group} --help')`,
      );
    }
    const values = parseCommandArgs(found.cmd, found.rest);
    if (values.help) {
      console.log(commandHelp(found.cmd));
      return 0;
    }
    return await found.cmd.run(values);
  } catch (e) {
    return report(e);
  }
}

/**
 * Codes whose message holds one finding per line, printed one `hallmark: <code>: <line>` line
 * each (a config file with three bad fields gives three lines, as the README promises). Every
 * other error is one line, whatever its message holds, so scripts can read the last line.
 */
const ONE_LINE_PER_FINDING = new Set(["config_invalid"]);

/** Readable lines, never a stack trace (HALLMARK_DEBUG=1 shows it). */
function report(e: unknown): number {
  if (process.env.HALLMARK_DEBUG === "1") console.error(e);
  if (e instanceof UsageError) {
    console.error(`hallmark: ${e.message}`);
    return 2;
  }
  if (isHallmarkError(e)) {
    const lines = e.message.split("\n").filter((l) => l.length > 0);
    const shown = ONE_LINE_PER_FINDING.has(e.code) ? lines : [lines.join("; ")];
    for (const line of shown) console.error(`hallmark: ${e.code}: ${line}`);
    return 1;
  }
  console.error(`hallmark: internal error: ${(e as Error)?.message ?? String(e)}`);
  return 1;
}
