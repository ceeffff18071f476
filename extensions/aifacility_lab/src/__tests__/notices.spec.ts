import {
  budgetNotices,
  IStorageLike,
  JobWatcher,
  lifetimeNotices,
  Memory
} from '../notices';
import { IBudget, IJob, ILifetime } from '../types';

/** localStorage as a Map; shared between "pages" to play a reload. */
class FakeStorage implements IStorageLike {
  readonly items = new Map<string, string>();
  get length(): number {
    return this.items.size;
  }
  key(index: number): string | null {
    return [...this.items.keys()][index] ?? null;
  }
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
  removeItem(key: string): void {
    this.items.delete(key);
  }
}

function job(name: string, phase: string, extra: Partial<IJob> = {}): IJob {
  return {
    name,
    phase,
    position: null,
    waiting_for: null,
    admission: null,
    site: null,
    node: null,
    group: 'physics',
    kind: 'notebook',
    command: null,
    created: '2026-12-07T10:00:00Z',
    started: null,
    finished: null,
    exit_code: null,
    reason: null,
    output_notebook: null,
    request: null,
    ...extra
  };
}

const PREFIX = 'aifacility:/user/alice/:';

describe('JobWatcher', () => {
  it('does not notify what it sees for the first time', () => {
    const watcher = new JobWatcher(new Memory(new FakeStorage(), PREFIX));
    expect(
      watcher.update([job('a', 'Succeeded'), job('b', 'Failed'), job('c', 'Running')])
    ).toEqual([]);
  });

  it('notifies admitted, succeeded and failed transitions once', () => {
    const watcher = new JobWatcher(new Memory(new FakeStorage(), PREFIX));
    watcher.update([job('a', 'Queued', { position: 2 }), job('b', 'Running')]);
    expect(
      watcher.update([job('a', 'Running', { site: 'hpc' }), job('b', 'Failed', { reason: 'OOMKilled' })])
    ).toEqual([
      { level: 'info', message: 'Job a admitted (hpc)' },
      { level: 'error', message: 'Job b failed: OOMKilled' }
    ]);
    expect(watcher.update([job('a', 'Running'), job('b', 'Failed')])).toEqual([]);
    expect(watcher.update([job('a', 'Succeeded'), job('b', 'Failed')])).toEqual([
      { level: 'success', message: 'Job a succeeded' }
    ]);
  });

  it('says admitted with the flavors, and only from Queued', () => {
    const watcher = new JobWatcher(new Memory(new FakeStorage(), PREFIX));
    watcher.update([job('a', 'Queued'), job('b', 'Suspended')]);
    const flavors = { admission: { flavors: { cpu: 'default', gpu: 't4' }, cluster_queue: 'physics' } };
    expect(watcher.update([job('a', 'Starting', flavors), job('b', 'Running')])).toEqual([
      { level: 'info', message: 'Job a admitted (default, t4)' }
    ]);
    // Starting -> Running is not a second admission.
    expect(watcher.update([job('a', 'Running', flavors), job('b', 'Running')])).toEqual([]);
  });

  it('counts the model a submission answered with as seen', () => {
    const watcher = new JobWatcher(new Memory(new FakeStorage(), PREFIX));
    expect(watcher.observe(job('new', 'Queued'))).toEqual([]);
    expect(watcher.update([job('new', 'Failed')])).toEqual([
      { level: 'error', message: 'Job new failed' }
    ]);
  });

  it('stays silent after a reload for what was notified, and for jobs ended unseen', () => {
    const storage = new FakeStorage();
    const first = new JobWatcher(new Memory(storage, PREFIX));
    first.update([job('a', 'Running'), job('b', 'Running')]);
    expect(first.update([job('a', 'Succeeded'), job('b', 'Running')])).toHaveLength(1);

    // The page is reloaded: b ended meanwhile, c ended before any page saw it.
    const second = new JobWatcher(new Memory(storage, PREFIX));
    expect(
      second.update([job('a', 'Succeeded'), job('b', 'Succeeded'), job('c', 'Failed')])
    ).toEqual([{ level: 'success', message: 'Job b succeeded' }]);

    const third = new JobWatcher(new Memory(storage, PREFIX));
    expect(
      third.update([job('a', 'Succeeded'), job('b', 'Succeeded'), job('c', 'Failed')])
    ).toEqual([]);
  });

  it('lets two tabs notify a transition once', () => {
    const storage = new FakeStorage();
    const tab1 = new JobWatcher(new Memory(storage, PREFIX));
    const tab2 = new JobWatcher(new Memory(storage, PREFIX));
    tab1.update([job('a', 'Running')]);
    tab2.update([job('a', 'Running')]);
    expect(tab1.update([job('a', 'Succeeded')])).toHaveLength(1);
    expect(tab2.update([job('a', 'Succeeded')])).toEqual([]);
  });

  it('forgets jobs no longer listed, and keeps users apart', () => {
    const storage = new FakeStorage();
    const alice = new JobWatcher(new Memory(storage, PREFIX));
    const bob = new JobWatcher(new Memory(storage, 'aifacility:/user/bob/:'));
    alice.update([job('a', 'Running')]);
    bob.update([job('z', 'Running')]);
    alice.update([]);
    expect([...storage.items.keys()]).toEqual(['aifacility:/user/bob/:job:z:seen']);
  });

  it('works without a usable storage', () => {
    const broken: IStorageLike = {
      length: 0,
      key: () => null,
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('quota');
      },
      removeItem: () => undefined
    };
    const watcher = new JobWatcher(new Memory(broken, PREFIX));
    watcher.update([job('a', 'Running')]);
    expect(watcher.update([job('a', 'Succeeded')])).toHaveLength(1);
    expect(watcher.update([job('a', 'Succeeded')])).toEqual([]);
  });
});

describe('lifetimeNotices', () => {
  const lifetime: ILifetime = {
    remaining_seconds: 5400,
    stop_at: '2026-12-07T13:00:00+00:00',
    stop_reason: 'lifetime',
    warning: null,
    warn_before_seconds: 900,
    extendable_hours: 2,
    extended_hours: 0,
    message: 'This session ends at 13:00 UTC (in 1 h 30 min).',
    profile: 'gpu-t4'
  };

  it('warns once on entering the window, once more under 5 minutes', () => {
    const memory = new Memory(new FakeStorage(), PREFIX);
    expect(lifetimeNotices(lifetime, 901, memory)).toEqual([]);
    expect(lifetimeNotices(lifetime, 899, memory)).toEqual([
      { level: 'warning', message: lifetime.message }
    ]);
    expect(lifetimeNotices(lifetime, 600, memory)).toEqual([]);
    const last = lifetimeNotices(lifetime, 299, memory);
    expect(last).toHaveLength(1);
    expect(last[0].level).toBe('warning');
    expect(last[0].message).toMatch(/^Less than 5 minutes left\./);
    expect(lifetimeNotices(lifetime, 10, memory)).toEqual([]);
  });

  it("uses the server's warning sentence when there is one", () => {
    const memory = new Memory(new FakeStorage(), PREFIX);
    const warned = { ...lifetime, warning: 'Save your work: 14 min left.' };
    expect(lifetimeNotices(warned, 840, memory)).toEqual([
      { level: 'warning', message: 'Save your work: 14 min left.' }
    ]);
  });

  it('says nothing without a lifetime, and once only after a reload', () => {
    const storage = new FakeStorage();
    expect(lifetimeNotices(null, 0, new Memory(storage, PREFIX))).toEqual([]);
    expect(lifetimeNotices(lifetime, 800, new Memory(storage, PREFIX))).toHaveLength(1);
    expect(lifetimeNotices(lifetime, 790, new Memory(storage, PREFIX))).toEqual([]);
  });

  it('gives a single notice when first seen under 5 minutes', () => {
    const memory = new Memory(new FakeStorage(), PREFIX);
    expect(lifetimeNotices(lifetime, 200, memory)).toHaveLength(1);
    expect(lifetimeNotices(lifetime, 100, memory)).toEqual([]);
  });

  it('warns again for the new deadline after an extension', () => {
    const storage = new FakeStorage();
    const memory = new Memory(storage, PREFIX);
    expect(lifetimeNotices(lifetime, 800, memory)).toHaveLength(1);
    const extended = { ...lifetime, stop_at: '2026-12-07T14:00:00+00:00' };
    expect(lifetimeNotices(extended, 4400, memory)).toEqual([]);
    expect(lifetimeNotices(extended, 800, memory)).toHaveLength(1);
    expect([...storage.items.keys()].every(key => key.includes('14:00:00'))).toBe(true);
  });
});

describe('budgetNotices', () => {
  const budget = (level: string, percent: number, scope = 'group'): IBudget => ({
    scope,
    name: 'physics',
    percent,
    level,
    message: `physics at ${percent}%`
  });

  it('warns at warned, errs at exhausted, once each', () => {
    const memory = new Memory(new FakeStorage(), PREFIX);
    expect(budgetNotices([budget('ok', 50)], memory)).toEqual([]);
    expect(budgetNotices([budget('warned', 81)], memory)).toEqual([
      { level: 'warning', message: 'physics at 81%' }
    ]);
    expect(budgetNotices([budget('warned', 85)], memory)).toEqual([]);
    expect(budgetNotices([budget('exhausted', 100)], memory)).toEqual([
      { level: 'error', message: 'physics at 100%' }
    ]);
    expect(budgetNotices([budget('exhausted', 100)], memory)).toEqual([]);
  });

  it('tells scopes apart and remembers across a reload', () => {
    const storage = new FakeStorage();
    expect(
      budgetNotices([budget('warned', 90), budget('warned', 90, 'user')], new Memory(storage, PREFIX))
    ).toHaveLength(2);
    expect(
      budgetNotices([budget('warned', 90), budget('warned', 90, 'user')], new Memory(storage, PREFIX))
    ).toEqual([]);
  });

  it('warns again in a new period after going back to ok', () => {
    const memory = new Memory(new FakeStorage(), PREFIX);
    expect(budgetNotices([budget('warned', 90)], memory)).toHaveLength(1);
    expect(budgetNotices([budget('ok', 1)], memory)).toEqual([]);
    expect(budgetNotices([budget('warned', 80)], memory)).toHaveLength(1);
  });
});
