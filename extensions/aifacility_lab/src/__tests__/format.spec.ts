import {
  budgetText,
  formatDuration,
  formatTimeLeft,
  jobRuntime,
  jobWhere,
  positionText,
  remainingAt
} from '../format';

describe('formatDuration', () => {
  it('writes m:ss under an hour', () => {
    expect(formatDuration(0)).toBe('0:00');
    expect(formatDuration(5)).toBe('0:05');
    expect(formatDuration(12 * 60 + 5)).toBe('12:05');
    expect(formatDuration(3599.9)).toBe('59:59');
  });
  it('writes h:mm:ss from an hour on', () => {
    expect(formatDuration(3600)).toBe('1:00:00');
    expect(formatDuration(3600 + 23 * 60 + 45)).toBe('1:23:45');
    expect(formatDuration(26 * 3600 + 61)).toBe('26:01:01');
  });
  it('counts negative and NaN as zero', () => {
    expect(formatDuration(-10)).toBe('0:00');
    expect(formatDuration(NaN)).toBe('0:00');
  });
});

describe('formatTimeLeft', () => {
  it('writes the countdown or no limit', () => {
    expect(formatTimeLeft(5025)).toBe('1:23:45 left');
    expect(formatTimeLeft(725)).toBe('12:05 left');
    expect(formatTimeLeft(null)).toBe('no limit');
  });
  it('counts down locally from the answer', () => {
    expect(remainingAt(100, 1_000, 31_000)).toBe(70);
    expect(remainingAt(10, 0, 60_000)).toBe(0);
  });
});

describe('jobs', () => {
  const now = Date.parse('2026-12-07T12:00:00Z');
  it('runs from started to finished, or to now', () => {
    expect(jobRuntime({ started: null, finished: null }, now)).toBe('');
    expect(
      jobRuntime({ started: '2026-12-07T11:58:30Z', finished: null }, now)
    ).toBe('1:30');
    expect(
      jobRuntime(
        { started: '2026-12-07T09:00:00+00:00', finished: '2026-12-07T10:01:02+00:00' },
        now
      )
    ).toBe('1:01:02');
    expect(jobRuntime({ started: 'garbage', finished: null }, now)).toBe('');
  });
  it('writes the queue position', () => {
    expect(positionText({ position: 2 })).toBe('#2 in queue');
    expect(positionText({ position: null })).toBe('');
  });
  it('says where: site, else distinct flavors, else nothing', () => {
    expect(jobWhere({ site: 'hpc', admission: { flavors: { cpu: 'x' } } })).toBe('hpc');
    expect(
      jobWhere({
        site: null,
        admission: { flavors: { cpu: 'default', memory: 'default', 'nvidia.com/gpu': 't4' } }
      })
    ).toBe('default, t4');
    expect(jobWhere({ site: null, admission: null })).toBe('');
  });
});

describe('budgetText', () => {
  it('shows the highest percent', () => {
    expect(budgetText([])).toBe('');
    expect(
      budgetText([
        { scope: 'user', name: 'alice', percent: 12.4, level: 'ok', message: '' },
        { scope: 'group', name: 'physics', percent: 41.6, level: 'ok', message: '' }
      ])
    ).toBe('budget 42%');
  });
});
