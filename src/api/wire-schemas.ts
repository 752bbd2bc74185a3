import { z } from "zod";

/** Field and answer schemas that several route tables (src/api/*-routes.ts) share. */
export const spiffeIdField = z.string().max(2048);

/** ISO 8601 UTC, as Date.toISOString() writes it. */
export const timestamp = z.iso.datetime();

/** A JSON object whose members are documented elsewhere (a JWKS, an attestor's challenge). */
export const jsonObject = z.record(z.string(), z.unknown());

export const bundleAnswer = z.object({ bundle_pem: z.string(), spiffe_bundle: jsonObject.describe("SPIFFE bundle (JWKS)") });
