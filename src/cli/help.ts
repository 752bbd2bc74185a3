import { type Command, type FlagSpec, HELP_FLAG } from "./args.js";

/** What each group of subcommands is about, for `hallmark GROUP --help` and the top help. */
const GROUP_SUMMARIES: Record<string, string> = {
  token: "join tokens for bootstrapping nodes (create); access tokens for agents acting for people (exchange)",
  entry: "registration entries: which SPIFFE IDs a node may fetch for its workloads",
  node: "attested nodes: list, evict, ban",
  delegation: "delegations: which agents may act for which people, within which scopes and audiences",
  bundle: "the trust bundle",
  ca: "the X.509 CA and JWT signing keys and their rotation",
  audit: "the audit log",
  store: "the datastore: schema migrations, and copying SQLite into PostgreSQL",
  fetch: "workload SVIDs, fetched as the node over mutual TLS",
  log: "the transparency log, for auditors and witnesses: checkpoints, receipts, consistency, monitoring",
};

const EXIT_CODES = "exit codes: 0 success, 1 the operation failed (hallmark: <code>: <why>), 2 usage error";

/** The group a command belongs to ("entry" for "entry create"), or undefined for a single word. */
export function groupOf(cmd: Command): string | undefined {
  const space = cmd.name.indexOf(" ");
  return space < 0 ? undefined : cmd.name.slice(0, space);
}

export function commandsOfGroup(commands: readonly Command[], group: string): Command[] {
  return commands.filter((c) => groupOf(c) === group);
}

/** Help lines are wrapped to this many columns, so a description stays beside its flag. */
const HELP_WIDTH = 100;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  return [...lines, line];
}

function flagLabel(name: string, f: FlagSpec): string {
  return f.type === "boolean" ? `--${name}` : `--${name} ${f.value ?? "VALUE"}`;
}

/** Required flags spelled out, the rest as [options]: the options list below says everything. */
export function usageLine(cmd: Command): string {
  const flags = Object.entries(cmd.options);
  const required = flags.filter(([, f]) => f.required).map(([n, f]) => `${flagLabel(n, f)}${f.multiple ? "..." : ""}`);
  const optional = flags.some(([, f]) => !f.required);
  return ["hallmark", cmd.name, ...required, ...(optional ? ["[options]"] : []), ...(cmd.operand ? [cmd.operand.value] : [])].join(" ");
}

function flagDescription(f: FlagSpec): string {
  const extra = [
    f.required ? "required" : undefined,
    f.multiple ? "repeatable" : undefined,
    f.default !== undefined ? `default: ${f.default}` : undefined,
    f.env ? `env: ${f.env}` : undefined,
  ].filter(Boolean);
  return extra.length ? `${f.description} (${extra.join("; ")})` : f.description;
}

export function commandHelp(cmd: Command): string {
  const rows = [
    ...(cmd.operand ? [[cmd.operand.value, cmd.operand.description]] : []),
    ...[...Object.entries(cmd.options), ["help", HELP_FLAG] as const].map(([n, f]) => [n === "help" ? "-h, --help" : flagLabel(n, f), flagDescription(f)]),
  ];
  const width = Math.max(...rows.map(([l]) => l!.length));
  return [
    `hallmark ${cmd.name}: ${cmd.summary}`,
    "",
    `usage: ${usageLine(cmd)}`,
    "",
    "options:",
    ...rows.map(([l, d]) => `  ${l!.padEnd(width)}  ${wrap(d!, HELP_WIDTH - width - 4).join(`\n${" ".repeat(width + 4)}`)}`),
    ...(cmd.notes ? ["", ...cmd.notes()] : []),
    "",
    EXIT_CODES,
  ].join("\n");
}

export function groupHelp(commands: readonly Command[], group: string): string {
  const subs = commandsOfGroup(commands, group);
  const width = Math.max(...subs.map((c) => c.name.length - group.length - 1));
  return [
    `hallmark ${group}: ${GROUP_SUMMARIES[group] ?? ""}`.trimEnd(),
    "",
    `usage: hallmark ${group} <subcommand> [options]   (hallmark ${group} <subcommand> --help for its options)`,
    "",
    "subcommands:",
    ...subs.map((c) => `  ${c.name.slice(group.length + 1).padEnd(width)}  ${c.summary}`),
  ].join("\n");
}

export function topHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "hallmark: SPIFFE attestation and issuance",
    "",
    "usage: hallmark <command> [options]",
    "       hallmark <command> --help, hallmark help <command>   (a command's options, defaults and environment variables)",
    "       hallmark <group> --help                              (a group's subcommands: token, entry, node, ca...)",
    "",
    "commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    EXIT_CODES,
  ].join("\n");
}
