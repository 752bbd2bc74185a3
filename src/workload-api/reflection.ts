import type { Server } from "@grpc/grpc-js";
import type { PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";

/** The indexes of one @grpc/reflection implementation (v1, v1alpha) that name symbols. */
interface ReflectionIndexes {
  symbols: Record<string, unknown>;
  services: Record<string, unknown>;
}

/**
 * gRPC server reflection (v1 and v1alpha) for the Workload API. The standard's proto has no
 * package, and @grpc/reflection 1.0.x names the symbols of a package-less file with a leading dot
 * (".SpiffeWorkloadAPI"): `list` would show a name no client can call, and asking for the file
 * of "SpiffeWorkloadAPI" (what grpcurl's `describe` does) would be NOT_FOUND. Each such name is
 * indexed again under its real full name, and services are listed only under it.
 */
export function addWorkloadReflection(server: Pick<Server, "addService">, packageDefinition: PackageDefinition): void {
  const reflection = new ReflectionService(packageDefinition);
  const internals = reflection as unknown as { v1?: ReflectionIndexes; v1Alpha?: ReflectionIndexes };
  for (const impl of [internals.v1, internals.v1Alpha]) {
    if (!impl?.symbols || !impl.services) continue; // another layout: leave it as the library made it
    for (const [name, file] of Object.entries(impl.symbols)) if (name.startsWith(".")) impl.symbols[name.slice(1)] ??= file;
    for (const [name, service] of Object.entries(impl.services)) {
      if (!name.startsWith(".")) continue;
      delete impl.services[name];
      impl.services[name.slice(1)] = service;
    }
  }
  reflection.addToServer(server);
}
