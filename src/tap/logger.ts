/**
 * The logging surface the tap module needs: a subset of pino's `Logger`, so a pino or fastify
 * logger can be passed as is. Library code never writes to the console.
 */
export interface TapLogger {
  warn(obj: Record<string, unknown>, msg: string): void;
  info(obj: Record<string, unknown>, msg: string): void;
  debug(obj: Record<string, unknown>, msg: string): void;
}

const noop = (): void => {};

/** Used when no logger is passed. */
export const silentLogger: TapLogger = { warn: noop, info: noop, debug: noop };
