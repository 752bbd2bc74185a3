import { readInputText } from "../input-file.js";
import { ADMIN_OPTIONS, adminCall, printAnswer } from "./admin-commands.js";
import { type Command, type OptionSpec, UsageError, optionalString, requireString } from "./args.js";

/** A relationship as the admin API answers it (src/api/federation-routes.ts). */
interface FederationJson {
  trust_domain: string;
  bundle_endpoint_url: string;
  profile: string;
  endpoint_spiffe_id: string | null;
  web_roots: string;
  bundle_sequence: number | null;
  bundle_refresh_hint_seconds: number | null;
  has_bundle: boolean;
  last_refresh_at: string | null;
  last_outcome: string | null;
  last_error: string | null;
  next_refresh_at: string;
  created_at: string;
}

const TD_OPERAND = { name: "trust-domain", value: "TD", description: "the foreign trust domain, e.g. partner.net" };

const ENDPOINT_OPTIONS: OptionSpec = {
  "bundle-endpoint": { type: "string", value: "URL", description: "the foreign bundle endpoint, e.g. https://partner.example/.well-known/spiffe-bundle" },
  profile: { type: "string", value: "https_web|https_spiffe", description: "how the endpoint is authenticated: Web PKI, or the peer's own X509-SVID and bundle" },
  "endpoint-spiffe-id": { type: "string", value: "ID", description: "https_spiffe: the SPIFFE ID of the endpoint's server, e.g. spiffe://partner.net/spire/server" },
  "trust-bundle-file": {
    type: "string",
    value: "FILE",
    description: "https_spiffe: the peer's current SPIFFE bundle (JSON), obtained out of band, to authenticate the first fetch",
  },
  "web-roots": { type: "string", value: "FILE", description: "https_web: PEM roots the endpoint's certificate must chain to", default: "the Web PKI roots Node ships" },
};

const line = (f: FederationJson) =>
  `${f.trust_domain}  ${f.profile}  ${f.bundle_endpoint_url}  sequence=${f.bundle_sequence ?? "-"}  last=${f.last_outcome ?? "never"}${f.last_refresh_at ? ` at ${f.last_refresh_at}` : ""}`;

const details = (f: FederationJson) =>
  [
    `trust domain:        ${f.trust_domain}`,
    `bundle endpoint:     ${f.bundle_endpoint_url}`,
    `profile:             ${f.profile}`,
    ...(f.profile === "https_spiffe" ? [`endpoint SPIFFE ID:  ${f.endpoint_spiffe_id}`] : [`web roots:           ${f.web_roots}`]),
    `bundle:              ${f.has_bundle ? `sequence ${f.bundle_sequence ?? "(none)"}, refresh hint ${f.bundle_refresh_hint_seconds ?? "(none)"}s` : "none fetched yet"}`,
    `last refresh:        ${f.last_refresh_at ? `${f.last_refresh_at}: ${f.last_outcome}${f.last_error ? ` (${f.last_error})` : ""}` : "never"}`,
    `next refresh:        ${f.next_refresh_at}`,
    `created:             ${f.created_at}`,
  ].join("\n");

/** The endpoint flags as the admin API's fields (files read here: a bad path is the operator's to fix now). */
function endpointFields(v: Record<string, unknown>): Record<string, unknown> {
  const profile = optionalString(v, "profile");
  if (profile !== undefined && profile !== "https_web" && profile !== "https_spiffe") throw new UsageError("--profile must be https_web or https_spiffe");
  const bundleFile = optionalString(v, "trust-bundle-file");
  const rootsFile = optionalString(v, "web-roots");
  const fields: Record<string, unknown> = {
    bundle_endpoint_url: optionalString(v, "bundle-endpoint"),
    profile,
    endpoint_spiffe_id: optionalString(v, "endpoint-spiffe-id"),
    trust_bundle: bundleFile === undefined ? undefined : readInputText(bundleFile, "--trust-bundle-file"),
    web_roots_pem: rootsFile === undefined ? undefined : readInputText(rootsFile, "--web-roots"),
  };
  return Object.fromEntries(Object.entries(fields).filter(([, x]) => x !== undefined));
}

const path = (v: Record<string, unknown>, tail = "") => `/admin/federations/${encodeURIComponent(requireString(v, "trust-domain"))}${tail}`;

export const federationCommands: Command[] = [
  {
    name: "federation create",
    summary: "federate with a foreign trust domain: fetch its bundle from its bundle endpoint and keep it fresh",
    options: {
      "trust-domain": { type: "string", value: "TD", required: true, description: "the foreign trust domain, e.g. partner.net" },
      ...ENDPOINT_OPTIONS,
      "bundle-endpoint": { ...ENDPOINT_OPTIONS["bundle-endpoint"]!, required: true },
      profile: { ...ENDPOINT_OPTIONS.profile!, required: true },
      ...ADMIN_OPTIONS,
    },
    async run(v) {
      const f = (await adminCall(v, "POST", "/admin/federations", { trust_domain: requireString(v, "trust-domain"), ...endpointFields(v) })) as FederationJson;
      return printAnswer(v, f, () => line(f));
    },
  },
  {
    name: "federation list",
    summary: "list federation relationships and how their last refresh went",
    options: ADMIN_OPTIONS,
    async run(v) {
      const r = (await adminCall(v, "GET", "/admin/federations")) as { federations: FederationJson[] };
      return printAnswer(v, r, () => r.federations.map(line).join("\n") || "no federation relationships");
    },
  },
  {
    name: "federation show",
    summary: "show one federation relationship",
    options: ADMIN_OPTIONS,
    operand: TD_OPERAND,
    async run(v) {
      const f = (await adminCall(v, "GET", path(v))) as FederationJson;
      return printAnswer(v, f, () => details(f));
    },
  },
  {
    name: "federation refresh",
    summary: "fetch the foreign bundle now (a refusal keeps the last good bundle and is audited)",
    options: ADMIN_OPTIONS,
    operand: TD_OPERAND,
    async run(v) {
      const r = (await adminCall(v, "POST", path(v, "/refresh"))) as { trust_domain: string; outcome: string; sequence: number | null; previous_sequence: number | null };
      return printAnswer(v, r, () => `${r.trust_domain}: ${r.outcome} (sequence ${r.previous_sequence ?? "-"} -> ${r.sequence ?? "-"})`);
    },
  },
  {
    name: "federation update",
    summary: "change a relationship's bundle endpoint, profile, endpoint ID or roots (or replace its bundle)",
    options: { ...ENDPOINT_OPTIONS, "default-web-roots": { type: "boolean", description: "https_web: go back to the Web PKI roots Node ships" }, ...ADMIN_OPTIONS },
    operand: TD_OPERAND,
    async run(v) {
      const fields = endpointFields(v);
      if (v["default-web-roots"] === true) {
        if (fields.web_roots_pem !== undefined) throw new UsageError("give --web-roots or --default-web-roots, not both");
        fields.web_roots_pem = null;
      }
      if (Object.keys(fields).length === 0) throw new UsageError("nothing to change (see 'hallmark federation update --help')");
      const f = (await adminCall(v, "POST", path(v), fields)) as FederationJson;
      return printAnswer(v, f, () => line(f));
    },
  },
  {
    name: "federation delete",
    summary: "end a federation relationship: its bundle is no longer handed to workloads",
    options: ADMIN_OPTIONS,
    operand: TD_OPERAND,
    async run(v) {
      const td = requireString(v, "trust-domain");
      await adminCall(v, "DELETE", path(v));
      return printAnswer(v, { deleted: td }, () => `deleted ${td}`);
    },
  },
];
