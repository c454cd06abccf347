/**
 * deploy/kubernetes, checked without a cluster or kustomize: every file parses and is referenced by
 * its kustomization; the containers' flags, variables and config file resolve through saegate's
 * own option tables (a renamed flag fails here); ports, probe paths and mounts agree across the
 * Deployment, the Service and the ServiceMonitor; the policies ConfigMap, laid out as the kubelet
 * mounts it, loads in a real proxy that answers the probe paths; generated copies are fresh.
 *
 * The policy watcher's handling of a ConfigMap update (the `..data` symlink swap) is tested in
 * test/unit/policies/policies.test.ts ("sees a Kubernetes ConfigMap update").
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { kubernetesFiles } from '../../../dashboards/kubernetes.js';
import { policyCheck } from '../../../src/cli/policy.js';
import { startProxyWithSaes } from '../../../src/cli/serve.js';
import { startModelServer } from '../../../src/model/server.js';
import { isLoopbackHost } from '../../../src/proxy/config.js';
import type { ProxyServer } from '../../../src/proxy/server.js';
import { ContainerRoot, deployDir, flagsIn, isUnder, knownVariables, readYaml, readYamlDocuments, resolveDeployed, splitCommand, commandSpecs } from '../../helpers/deploy.js';
import { hasSharedModels, stories260K } from '../../helpers/fixtures.js';

const baseDir = path.join(deployDir, 'kubernetes', 'base');
const overlayDir = path.join(deployDir, 'kubernetes', 'overlays', 'example');

interface Kustomization {
  resources?: string[];
  patches?: { path: string; target?: Record<string, string> }[];
  configMapGenerator?: { name: string; files: string[]; options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string> } }[];
  images?: { name: string }[];
  replicas?: { name: string; count: number }[];
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  image: string;
  args: string[];
  restartPolicy?: string;
  env?: EnvVar[];
  ports?: { name: string; containerPort: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { memory?: string } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Volume {
  name: string;
  configMap?: { name: string };
  persistentVolumeClaim?: { claimName: string };
  emptyDir?: object;
}
interface Deployment {
  kind: string;
  metadata: { name: string };
  spec: {
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: { terminationGracePeriodSeconds: number; initContainers: Container[]; containers: Container[]; volumes: Volume[]; securityContext: { runAsNonRoot?: boolean } };
    };
  };
}
interface Service {
  metadata: { labels: Record<string, string> };
  spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string | number }[] };
}
interface ServiceMonitor {
  spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] };
}

const kustomization = readYaml<Kustomization>(path.join(baseDir, 'kustomization.yaml'));
const deployment = readYaml<Deployment>(path.join(baseDir, 'deployment.yaml'));
const podSpec = deployment.spec.template.spec;
const saegate = podSpec.initContainers.find((c) => c.name === 'saegate');
const modelServer = podSpec.containers.find((c) => c.name === 'model-server');
const generators = new Map((kustomization.configMapGenerator ?? []).map((g) => [g.name, g]));

/** A container's variables as the process sees them; a Secret's value becomes a placeholder naming it. */
function environment(container: Container): Record<string, string> {
  return Object.fromEntries(
    (container.env ?? []).map((v) => {
      const ref = v.valueFrom?.secretKeyRef;
      return [v.name, v.value ?? (ref ? `secret:${ref.name}/${ref.key}` : '')];
    }),
  );
}

/** The files of a generated ConfigMap, by key. */
function configMapFiles(name: string): Map<string, string> {
  const generator = generators.get(name);
  if (generator === undefined) throw new Error(`no configMapGenerator named ${name}`);
  return new Map(generator.files.map((file) => [path.basename(file), fs.readFileSync(path.join(baseDir, file), 'utf8')]));
}

/** The container's view of its volumes: ConfigMap mounts written out in the kubelet's layout. */
function containerRoot(container: Container): ContainerRoot {
  const root = new ContainerRoot();
  for (const mount of container.volumeMounts ?? []) {
    const volume = podSpec.volumes.find((v) => v.name === mount.name);
    if (volume?.configMap) root.mountConfigMap(mount.mountPath, configMapFiles(volume.configMap.name));
  }
  return root;
}

function mountedAt(container: Container, p: string): boolean {
  return (container.volumeMounts ?? []).some((m) => isUnder(p, m.mountPath));
}

function portNumber(container: Container, port: string | number): number | undefined {
  return typeof port === 'number' ? port : container.ports?.find((p) => p.name === port)?.containerPort;
}

describe('deploy/kubernetes files', () => {
  it('parse, and the kustomizations reference every file in their folders and only files that exist', () => {
    const listed = new Set<string>(['kustomization.yaml']);
    for (const file of [...(kustomization.resources ?? []), ...(kustomization.configMapGenerator ?? []).flatMap((g) => g.files)]) {
      expect(fs.existsSync(path.join(baseDir, file)), file).toBe(true);
      listed.add(file);
    }
    const onDisk = fs.readdirSync(baseDir, { recursive: true, encoding: 'utf8' }).filter((f) => fs.statSync(path.join(baseDir, f)).isFile());
    expect(onDisk.sort()).toEqual([...listed].sort());
    for (const file of onDisk.filter((f) => /\.ya?ml$/.test(f))) expect(readYamlDocuments(path.join(baseDir, file)).length, file).toBeGreaterThan(0);
    for (const file of onDisk.filter((f) => f.endsWith('.json'))) expect(() => JSON.parse(fs.readFileSync(path.join(baseDir, file), 'utf8')), file).not.toThrow();

    const overlay = readYaml<Kustomization>(path.join(overlayDir, 'kustomization.yaml'));
    expect(overlay.resources).toEqual(['../../base']);
    const overlayListed = new Set(['kustomization.yaml', ...(overlay.patches ?? []).map((p) => p.path)]);
    expect(fs.readdirSync(overlayDir).sort()).toEqual([...overlayListed].sort());
    for (const file of overlayListed) expect(readYamlDocuments(path.join(overlayDir, file)).length, file).toBeGreaterThan(0);
  });

  it('hold the dashboards and the PrometheusRule exactly as `npm run dashboards` writes them', () => {
    for (const [file, content] of kubernetesFiles()) expect(fs.readFileSync(file, 'utf8'), path.relative(deployDir, file)).toBe(content);
    const dashboards = generators.get('saegate-dashboards');
    expect(dashboards?.options?.labels).toEqual({ grafana_dashboard: '1' });
    const copies = [...kubernetesFiles().keys()].filter((f) => f.endsWith('.json')).map((f) => path.relative(baseDir, f));
    expect([...(dashboards?.files ?? [])].sort()).toEqual(copies.sort());
  });

  it('run saegate as a native sidecar: an init container with restartPolicy Always, probed on /healthz and /readyz', () => {
    expect(saegate?.restartPolicy).toBe('Always');
    expect(saegate?.startupProbe?.httpGet?.path).toBe('/healthz');
    expect(saegate?.livenessProbe?.httpGet?.path).toBe('/healthz');
    expect(saegate?.readinessProbe?.httpGet?.path).toBe('/readyz');
    expect(podSpec.securityContext.runAsNonRoot).toBe(true);
    for (const container of [saegate, modelServer]) {
      expect(container?.resources?.requests?.cpu, container?.name).toBeDefined();
      expect(container?.resources?.requests?.memory, container?.name).toBeDefined();
      expect(container?.resources?.limits?.memory, container?.name).toBeDefined();
    }
  });

  it("use only flags and variables in saegate's option tables, and every path they name is mounted", () => {
    for (const container of [saegate, modelServer]) {
      if (container === undefined) throw new Error('container missing');
      const { name, args } = splitCommand(container.args);
      const spec = commandSpecs[name];
      const known = Object.keys(spec.options).map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
      for (const flag of flagsIn(args)) expect(known, `${container.name}: ${flag}`).toContain(flag);
      for (const variable of Object.keys(environment(container))) expect(knownVariables(spec), `${container.name}: ${variable}`).toContain(variable);
      const paths = [...args.filter((a) => a.startsWith('/')), ...Object.values(environment(container)).filter((v) => v.startsWith('/'))];
      expect(paths.length, container.name).toBeGreaterThan(0);
      for (const p of paths) expect(mountedAt(container, p), `${container.name}: ${p} is on no volume`).toBe(true);
    }
  });

  it('resolve their options through the option tables; ports, upstream, tap URL and token agree across the pod', () => {
    if (saegate === undefined || modelServer === undefined) throw new Error('container missing');
    const root = containerRoot(saegate);
    try {
      const proxy = resolveDeployed('serve', splitCommand(saegate.args).args, environment(saegate), (p) => root.map(p));
      const model = resolveDeployed('model serve', splitCommand(modelServer.args).args, environment(modelServer));
      expect(portNumber(saegate, 'http')).toBe(proxy.port);
      for (const probe of [saegate.startupProbe, saegate.livenessProbe, saegate.readinessProbe]) expect(portNumber(saegate, probe?.httpGet?.port ?? -1)).toBe(proxy.port);
      // The model server is reachable only inside the pod: on a Unix socket in a volume both
      // containers mount, which saegate forwards to and the model server's probe asks.
      expect(typeof model.unix, 'the model server listens on a Unix socket').toBe('string');
      expect(proxy.upstreamSocket).toBe(model.unix);
      expect(new URL(proxy.upstream).hostname).toBe('localhost');
      const socketVolume = (container: Container): string | undefined => container.volumeMounts?.find((m) => isUnder(model.unix ?? '', m.mountPath))?.name;
      expect(socketVolume(modelServer)).toBeDefined();
      expect(socketVolume(saegate)).toBe(socketVolume(modelServer));
      expect(podSpec.volumes.find((v) => v.name === socketVolume(modelServer))?.emptyDir, 'the socket volume is an emptyDir').toBeDefined();
      expect(modelServer.livenessProbe?.exec?.command.join(' ')).toContain(`socketPath: '${model.unix}'`);
      expect(model.tap).toBe(`ws://127.0.0.1:${proxy.port}/v1/tap`);
      // The tap shares saegate's port: off loopback it takes only the token, from a Secret.
      if (!isLoopbackHost(proxy.host)) {
        const tokenVar = saegate.env?.find((v) => v.name === 'SAEGATE_TAP_TOKEN');
        expect(tokenVar?.valueFrom?.secretKeyRef, 'SAEGATE_TAP_TOKEN from a Secret').toBeDefined();
        expect(modelServer.env?.find((v) => v.name === 'SAEGATE_TAP_TOKEN')?.valueFrom).toEqual(tokenVar?.valueFrom);
        expect(proxy.tapToken).toBe(model.tapToken);
        expect(fs.readFileSync(root.map(environment(saegate).SAEGATE_CONFIG), 'utf8')).not.toMatch(/tapToken/);
      }
      // Pod termination leaves saegate time to drain and finish in-flight requests.
      expect(podSpec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(proxy.drainDelayMs + proxy.shutdownTimeoutMs);
    } finally {
      root.remove();
    }
  });

  it('mount ConfigMaps the kustomization generates; policies and vectors keep their names so updates reach the running pod', () => {
    for (const volume of podSpec.volumes) {
      if (volume.configMap) expect(generators.has(volume.configMap.name), volume.name).toBe(true);
    }
    for (const name of ['saegate-policies', 'saegate-vectors']) expect(generators.get(name)?.options?.disableNameSuffixHash, name).toBe(true);
    // The config is read at start only: its hashed name rolls the pods on a change.
    expect(generators.get('saegate-config')?.options?.disableNameSuffixHash).toBeUndefined();
  });

  it('expose saegate through the Service and the ServiceMonitor on its port, scraping /metrics', () => {
    if (saegate === undefined) throw new Error('container missing');
    const service = readYaml<Service>(path.join(baseDir, 'service.yaml'));
    const monitor = readYaml<ServiceMonitor>(path.join(baseDir, 'servicemonitor.yaml'));
    expect(deployment.spec.template.metadata.labels).toMatchObject(service.spec.selector);
    expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels);
    expect(service.spec.ports.map((p) => portNumber(saegate, p.targetPort))).toEqual([portNumber(saegate, 'http')]);
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.endpoints.map((e) => [e.port, e.path])).toEqual([[service.spec.ports[0].name, '/metrics']]);
  });

  it('name in the example overlay only containers, images and Deployments of the base', () => {
    const overlay = readYaml<Kustomization>(path.join(overlayDir, 'kustomization.yaml'));
    const images = new Set([...podSpec.initContainers, ...podSpec.containers].map((c) => c.image.split(':')[0]));
    for (const image of overlay.images ?? []) expect(images.has(image.name), image.name).toBe(true);
    for (const replicas of overlay.replicas ?? []) expect(replicas.name).toBe(deployment.metadata.name);
    const patch = readYaml<Deployment>(path.join(overlayDir, 'resources.yaml'));
    expect(patch.metadata.name).toBe(deployment.metadata.name);
    const names = (list: Container[]): string[] => list.map((c) => c.name);
    expect(names(podSpec.initContainers)).toEqual(expect.arrayContaining(names(patch.spec.template.spec.initContainers)));
    expect(names(podSpec.containers)).toEqual(expect.arrayContaining(names(patch.spec.template.spec.containers)));
  });
});

describe('the saegate container, started from the manifest with its ConfigMaps mounted in the kubelet layout', () => {
  let root: ContainerRoot;
  let server: ProxyServer;

  beforeAll(async () => {
    if (saegate === undefined) throw new Error('container missing');
    root = containerRoot(saegate);
    // The SAE lives on the model volume, which is not here: everything else is as deployed. The
    // policies name their vectors by container path; point them at the mounted copy.
    const { sae: _sae, policies, ...config } = resolveDeployed('serve', splitCommand(saegate.args).args, environment(saegate), (p) => root.map(p));
    const policyDir = root.map(policies ?? '/missing');
    for (const file of fs.readdirSync(policyDir).filter((f) => !f.startsWith('.'))) {
      const real = fs.realpathSync(path.join(policyDir, file));
      fs.writeFileSync(real, fs.readFileSync(real, 'utf8').replaceAll('/etc/saegate/', `${root.map('/etc/saegate')}/`));
    }
    ({ server } = await startProxyWithSaes({ ...config, host: '127.0.0.1', port: 0 }, [], policyDir));
  });

  afterAll(async () => {
    await server?.close();
    root?.remove();
  });

  it('answers the probe paths and /metrics (readiness waits for the model server)', async () => {
    const status = async (p: string): Promise<number> => {
      const res = await request(`${server.url}${p}`);
      await res.body.dump();
      return res.statusCode;
    };
    expect(await status('/healthz')).toBe(200);
    expect(await status('/readyz')).toBe(503);
    expect(await status('/metrics')).toBe(200);
  });

  it.skipIf(!hasSharedModels)('loads policies that pass `policy check` against the model the pod serves', async () => {
    if (saegate === undefined) throw new Error('container missing');
    const { policies } = resolveDeployed('serve', splitCommand(saegate.args).args, environment(saegate), (p) => root.map(p));
    const result = await policyCheck([root.map(policies ?? '/missing'), '--model', stories260K.model]);
    expect(result).toEqual({ code: 0, lines: ['1 policy in 1 file(s): ok'] });
  });
});

describe("the model server's liveness probe, run as the kubelet runs it", () => {
  /** The probe's command with the manifest's socket path replaced by `socket`; its exit code. */
  async function probe(socket: string): Promise<number | null> {
    if (modelServer === undefined) throw new Error('container missing');
    const { unix } = resolveDeployed('model serve', splitCommand(modelServer.args).args, environment(modelServer));
    if (!unix) throw new Error('the model server has no --unix');
    const [command, ...args] = modelServer.livenessProbe?.exec?.command ?? [];
    expect(command).toBe('node');
    const child = spawn(process.execPath, args.map((a) => a.replaceAll(unix, socket)), { stdio: 'ignore' });
    return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  it('passes while the model server answers on its socket and fails once it is gone', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-probe-'));
    try {
      const socket = path.join(dir, 'model.sock');
      const server = await startModelServer({ model: 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=96,seed=5', unixSocket: socket });
      try {
        expect(await probe(socket)).toBe(0);
      } finally {
        await server.close();
      }
      expect(await probe(socket)).toBe(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
