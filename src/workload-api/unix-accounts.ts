import { readFileSync } from "node:fs";

/**
 * User and group names for ids, from /etc/passwd and /etc/group (the files NSS reads first on a
 * plain Linux host; no LDAP or systemd-homed lookups). Read afresh on each lookup so an account
 * added while the agent runs is seen; both files are small.
 */
export interface UnixAccounts {
  userName(uid: number): string | undefined;
  groupName(gid: number): string | undefined;
}

/** name → id from a colon-separated file whose first field is the name and third the id. */
function idsToNames(text: string): Map<number, string> {
  const names = new Map<number, string>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const [name, , id] = line.split(":");
    if (!name || id === undefined || !/^\d+$/.test(id)) continue;
    const n = Number(id);
    // The first line for an id wins, as getpwuid(3) answers.
    if (!names.has(n)) names.set(n, name);
  }
  return names;
}

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export function etcAccounts(passwd = "/etc/passwd", group = "/etc/group"): UnixAccounts {
  return {
    userName: (uid) => idsToNames(readOrEmpty(passwd)).get(uid),
    groupName: (gid) => idsToNames(readOrEmpty(group)).get(gid),
  };
}
