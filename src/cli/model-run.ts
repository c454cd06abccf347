/**
 * Running a corpus through a model for the SAE commands (`sae train`, `sae features`): either the
 * reference model server started in-process on a free port, or an external tap-speaking server the
 * user points at the collector's tap URL. Both paths go through real HTTP and a real tap WebSocket,
 * so what a command sees is what saegate would see in front of that server.
 */
import type { Device } from '../common/ort.js';
import { loadModel } from '../model/load.js';
import { startModelServer, type ModelServer } from '../model/server.js';
import type { LoadedModel } from '../model/types.js';
import { ActivationCollector, type CollectServerInfo } from '../lab/collect.js';
import { defaultModel } from './default-model.js';

export interface ModelRunOptions {
  hook: string;
  /** In-process model (default: the embedded default model) unless `upstream` is given. */
  model?: string;
  tokenizer?: string;
  /** An external model server's base URL; it must dial the collector's tap. */
  upstream?: string;
  /** Port the collector's tap listens on (0 = any). */
  tapPort?: number;
  device?: Device;
  threads?: number;
  log: (line: string) => void;
}

export interface ModelRun {
  collector: ActivationCollector;
  upstream: string;
  server: CollectServerInfo;
  /** The in-process model (weights and tokenizer); null with `upstream`. */
  loaded: LoadedModel | null;
  /** What the data came from, for reports. */
  describe: string;
  close(): Promise<void>;
}

export async function openModelRun(options: ModelRunOptions): Promise<ModelRun> {
  const collector = await ActivationCollector.start({ hook: options.hook, tapPort: options.tapPort ?? 0, log: options.log });
  let modelServer: ModelServer | null = null;
  try {
    let upstream: string;
    let loaded: LoadedModel | null = null;
    if (options.upstream !== undefined) {
      upstream = options.upstream;
      options.log(`waiting for the model server at ${upstream} to connect its tap to ${collector.tapUrl} (start it with --tap ${collector.tapUrl})`);
    } else {
      loaded = await loadModel({ model: options.model ?? defaultModel(), tokenizer: options.tokenizer });
      modelServer = await startModelServer({ model: loaded.source, loaded, port: 0, tapUrl: collector.tapUrl, device: options.device, threads: options.threads, maxBatch: 8 });
      upstream = modelServer.url;
    }
    const server = await collector.waitForServer(options.upstream !== undefined ? 120_000 : 30_000);
    const started = modelServer;
    return {
      collector,
      upstream,
      server,
      loaded,
      describe: loaded ? `${loaded.name} (${loaded.source})` : `${server.modelId} at ${upstream}`,
      async close() {
        await started?.close();
        await collector.close();
      },
    };
  } catch (error) {
    await modelServer?.close();
    await collector.close();
    throw error;
  }
}
