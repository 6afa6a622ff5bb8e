// Soko's errors as values: every refusal carries google.rpc details (field violations for
// INVALID_ARGUMENT, RetryInfo for RESOURCE_EXHAUSTED, ErrorInfo with a stable reason such as
// READ_ONLY_MODE). `SokoError.from` reads them out of a ConnectError.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export interface FieldViolation {
  field: string;
  description: string;
}

export class SokoError extends Error {
  constructor(
    readonly code: Code,
    readonly rawMessage: string,
    readonly fieldViolations: FieldViolation[],
    /** Seconds to wait before retrying, when Soko said. */
    readonly retryAfter: number | undefined,
    /** ErrorInfo's reason, e.g. "READ_ONLY_MODE", and its metadata. */
    readonly reason: string | undefined,
    readonly metadata: Record<string, string>,
    options?: { cause?: unknown },
  ) {
    super(`${Code[code]}: ${rawMessage}`, options);
    this.name = "SokoError";
  }

  static from(error: unknown): SokoError {
    const e = ConnectError.from(error);
    const fieldViolations = e
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    const retry = e.findDetails(RetryInfoSchema)[0]?.retryDelay;
    const retryAfter = retry ? Number(retry.seconds) + retry.nanos / 1e9 : undefined;
    const info = e.findDetails(ErrorInfoSchema)[0];
    return new SokoError(e.code, e.rawMessage, fieldViolations, retryAfter, info?.reason, info?.metadata ?? {}, {
      cause: error,
    });
  }
}
