/**
 * deploy/Dockerfile and deploy/compose, checked without Docker (it is not on CI): the Dockerfile's
 * stages, user, production install, onnxruntime's install switch and entry point; the compose
 * services' commands and variables resolved through saegate's option tables, and the ports, URLs,
 * mounted files and Prometheus/Grafana provisioning agreeing with each other.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { commandSpecs, deployDir, flagsIn, knownVariables, readYaml, repoRoot, resolveDeployed, splitCommand } from '../../helpers/deploy.js';

interface Instruction {
  keyword: string;
  args: string;
}

/** The Dockerfile as instructions (continuations joined, comments and parser directives dropped), split into stages. */
function dockerStages(file: string): { from: string; name: string | undefined; instructions: Instruction[] }[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const instructions: Instruction[] = [];
  let pending = '';
  for (const line of lines) {
    if (/^\s*#/.test(line)) continue;
    pending += line.replace(/\\\s*$/, ' ');
    if (/\\\s*$/.test(line)) continue;
    const text = pending.trim();
    pending = '';
    if (text === '') continue;
    const [keyword, ...rest] = text.split(/\s+/);
    instructions.push({ keyword: keyword.toUpperCase(), args: rest.join(' ') });
  }
  const stages: { from: string; name: string | undefined; instructions: Instruction[] }[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const [from, as, name] = instruction.args.split(/\s+/);
      stages.push({ from, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else stages.at(-1)?.instructions.push(instruction);
  }
  return stages;
}

const dockerfile = path.join(deployDir, 'Dockerfile');
const stages = dockerStages(dockerfile);
const runtime = stages.at(-1);
const of = (stage: (typeof stages)[number] | undefined, keyword: string): string[] => (stage?.instructions ?? []).filter((i) => i.keyword === keyword).map((i) => i.args);

describe('deploy/Dockerfile', () => {
  it('builds in stages and runs as a non-root user', () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    const user = of(runtime, 'USER');
    expect(user.length).toBe(1);
    expect(user[0].split(':')[0]).not.toMatch(/^(0|root)$/);
  });

  it('copies into the last stage only production dependencies and the compiled code', () => {
    const copies = of(runtime, 'COPY').filter((c) => c.startsWith('--from='));
    const fromStage = (target: string): (typeof stages)[number] | undefined => {
      const copy = copies.find((c) => c.trim().endsWith(target));
      return stages.find((s) => s.name === copy?.match(/--from=(\S+)/)?.[1]);
    };
    const deps = fromStage('./node_modules');
    expect(of(deps, 'RUN').join('\n')).toMatch(/npm ci --omit=dev/);
    expect(of(fromStage('./dist'), 'RUN').join('\n')).toMatch(/npm run build/);
    // No devDependency reaches the image by another route.
    expect(of(runtime, 'RUN').join('\n')).not.toMatch(/npm (ci|install)/);
  });

  it('passes ONNXRUNTIME_NODE_INSTALL (default skip, cuda12 for CUDA) to the production install', () => {
    const deps = stages.find((s) => of(s, 'RUN').some((r) => r.includes('--omit=dev')));
    expect(of(deps, 'ARG')).toContain('ONNXRUNTIME_NODE_INSTALL=skip');
    expect(of(deps, 'RUN').join('\n')).toMatch(/ONNXRUNTIME_NODE_INSTALL=\$\{ONNXRUNTIME_NODE_INSTALL\} npm ci/);
    const text = fs.readFileSync(dockerfile, 'utf8');
    expect(text).toMatch(/--build-arg ONNXRUNTIME_NODE_INSTALL=cuda12/);
    expect(fs.readFileSync(path.join(repoRoot, 'docs', 'deploy.md'), 'utf8')).toMatch(/--build-arg ONNXRUNTIME_NODE_INSTALL=cuda12/);
  });

  it("starts the compiled CLI (package.json's bin), built from src/cli/main.ts, with files that exist and are not ignored", () => {
    const entrypoint = JSON.parse(of(runtime, 'ENTRYPOINT')[0]) as string[];
    const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { bin: { saegate: string } };
    expect(entrypoint).toEqual(['node', `/app/${pkg.bin.saegate}`]);
    const build = JSON.parse(fs.readFileSync(path.join(repoRoot, 'tsconfig.build.json'), 'utf8')) as { compilerOptions: { rootDir: string; outDir: string } };
    const source = pkg.bin.saegate.replace(build.compilerOptions.outDir, build.compilerOptions.rootDir).replace(/\.js$/, '.ts');
    expect(fs.existsSync(path.join(repoRoot, source)), source).toBe(true);
    const ignored = fs.readFileSync(path.join(deployDir, 'Dockerfile.dockerignore'), 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    for (const copy of stages.flatMap((s) => of(s, 'COPY')).filter((c) => !c.startsWith('--from='))) {
      for (const src of copy.split(/\s+/).slice(0, -1)) {
        expect(fs.existsSync(path.join(repoRoot, src)), src).toBe(true);
        expect(ignored, src).not.toContain(src);
      }
    }
    const cmd = JSON.parse(of(runtime, 'CMD')[0]) as string[];
    expect(cmd[0]).toBe('serve');
  });
});

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string; args?: Record<string, string> };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
}
interface Compose {
  services: Record<string, ComposeService>;
}

const composeDir = path.join(deployDir, 'compose');
const compose = readYaml<Compose>(path.join(composeDir, 'compose.yaml'));

/** `${VAR:?message}` and `${VAR:-default}` as compose reads them, with the variables unset. */
function interpolate(value: string): string {
  return value.replace(/\$\{([A-Z_]+)(:[-?])([^}]*)\}/g, (_m, name: string, op: string, rest: string) => (op === ':-' ? rest : `set-by-user:${name}`));
}

function serviceEnv(service: ComposeService): Record<string, string> {
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));
}

/** The service's bind mounts: container path → host path (relative paths against the compose folder). */
function mounts(service: ComposeService): Map<string, string> {
  return new Map(
    (service.volumes ?? []).map((volume) => {
      const [host, container] = interpolate(volume).split(':');
      return [container, path.resolve(composeDir, host)];
    }),
  );
}

describe('deploy/compose', () => {
  const saegate = compose.services.saegate;
  const model = compose.services['model-server'];
  const hostPath = (service: ComposeService, p: string): string => {
    for (const [container, host] of mounts(service)) if (p === container || p.startsWith(`${container}/`)) return path.join(host, p.slice(container.length));
    throw new Error(`${p} is on no volume`);
  };

  it("runs saegate commands with flags and variables from saegate's option tables", () => {
    const saegateServices = Object.entries(compose.services).filter(([, s]) => s.image?.startsWith('saegate:'));
    expect(saegateServices.map(([name]) => name).sort()).toEqual(['model-server', 'saegate']);
    for (const [name, service] of saegateServices) {
      // Built from deploy/Dockerfile with the repository as the context, CPU onnxruntime by default.
      expect(path.resolve(composeDir, service.build?.context ?? '', service.build?.dockerfile ?? ''), name).toBe(dockerfile);
      expect(path.resolve(composeDir, service.build?.context ?? ''), name).toBe(repoRoot);
      expect(service.build?.args?.ONNXRUNTIME_NODE_INSTALL, name).toBe('skip');
      const { name: command, args } = splitCommand(service.command ?? []);
      const spec = commandSpecs[command];
      const known = Object.keys(spec.options).map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
      for (const flag of flagsIn(args)) expect(known, `${name}: ${flag}`).toContain(flag);
      for (const variable of Object.keys(service.environment ?? {})) expect(knownVariables(spec), `${name}: ${variable}`).toContain(variable);
    }
  });

  it('wires the model server, saegate, Prometheus and Grafana to each other by service name and port', () => {
    const proxy = resolveDeployed('serve', splitCommand(saegate.command ?? []).args, serviceEnv(saegate), (p) => hostPath(saegate, p));
    const served = resolveDeployed('model serve', splitCommand(model.command ?? []).args, serviceEnv(model));
    expect(proxy.upstream).toBe(`http://model-server:${served.port}`);
    expect(served.tap).toBe(`ws://saegate:${proxy.port}/v1/tap`);
    expect(proxy.tapToken).toBe(served.tapToken);
    expect(proxy.tapToken).not.toBeNull();
    expect(saegate.ports).toEqual([`127.0.0.1:${proxy.port}:${proxy.port}`]);
    expect(model.ports).toBeUndefined();
    expect(fs.existsSync(hostPath(saegate, proxy.policies ?? '/missing'))).toBe(true);

    const prometheusConfigPath = '/etc/prometheus/prometheus.yml';
    const prometheus = compose.services.prometheus;
    const config = readYaml<{ rule_files: string[]; scrape_configs: { metrics_path: string; static_configs: { targets: string[] }[] }[] }>(hostPath(prometheus, prometheusConfigPath));
    expect(config.scrape_configs.flatMap((s) => s.static_configs.flatMap((c) => c.targets))).toEqual([`saegate:${proxy.port}`]);
    expect(config.scrape_configs[0].metrics_path).toBe('/metrics');
    for (const rules of config.rule_files) {
      const file = hostPath(prometheus, path.posix.join(path.posix.dirname(prometheusConfigPath), rules));
      expect(fs.realpathSync(file)).toBe(path.join(repoRoot, 'dashboards', 'prometheus', rules));
    }

    const grafana = compose.services.grafana;
    const provisioning = hostPath(grafana, '/etc/grafana/provisioning');
    const datasources = readYaml<{ datasources: { type: string; url: string }[] }>(path.join(provisioning, 'datasources', 'prometheus.yaml'));
    expect(datasources.datasources.map((d) => [d.type, d.url])).toEqual([['prometheus', 'http://prometheus:9090']]);
    const providers = readYaml<{ providers: { options: { path: string } }[] }>(path.join(provisioning, 'dashboards', 'saegate.yaml'));
    expect(hostPath(grafana, providers.providers[0].options.path)).toBe(path.join(repoRoot, 'dashboards', 'json'));
  });
});
