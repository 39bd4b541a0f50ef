/** How many workers `--workers` means on this machine (cores, affinity, cgroup CPU quota). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export function workerCount(spec: string | number | undefined, cores: number): number {
  if (spec === undefined) return 1;
  if (spec === 'auto') return Math.max(1, cores);
  return Number(spec);
}

/**
 * CPUs this process may use: the cores it may run on (affinity), capped by a cgroup
 * CPU quota (`docker run --cpus 2`: cpu.max "200000 100000" in cgroup v2,
 * cfs_quota_us / cfs_period_us in v1), rounded up. Read here rather than trusted
 * to node: os.availableParallelism() ignores the quota before libuv 1.49.
 */
export function usableCpus(cores: number, cgroupRoot = '/sys/fs/cgroup'): number {
  const quota = cgroupCpuQuota(cgroupRoot);
  return Math.max(1, quota === null ? cores : Math.min(cores, Math.ceil(quota)));
}

/** The cgroup's CPU quota in CPUs, or null when there is none (or no cgroup file to read). */
export function cgroupCpuQuota(root: string): number | null {
  const read = (path: string): string | null => {
    try {
      return readFileSync(join(root, path), 'utf8').trim();
    } catch {
      return null;
    }
  };
  // "max" (v2) and -1 (v1) both read as no quota.
  const cpus = (quota: string | undefined, period: string | undefined): number | null => {
    const q = Number(quota);
    const p = Number(period);
    return q > 0 && p > 0 ? q / p : null;
  };
  const v2 = read('cpu.max');
  if (v2 !== null) {
    const [q, p] = v2.split(/\s+/);
    return cpus(q, p);
  }
  for (const dir of ['cpu', 'cpu,cpuacct']) {
    const q = read(`${dir}/cpu.cfs_quota_us`);
    const p = read(`${dir}/cpu.cfs_period_us`);
    if (q !== null && p !== null) return cpus(q, p);
  }
  return null;
}

