import { buildJobRequest } from '../jobrequest';

describe('buildJobRequest', () => {
  it('leaves out every empty field', () => {
    const result = buildJobRequest('analysis/fit.ipynb', {
      group: '',
      cpu: ' ',
      memory: '',
      accelerator: '',
      count: '1',
      offload: '',
      hours: '',
      parameters: '  '
    });
    expect(result).toEqual({ ok: true, request: { notebook: 'analysis/fit.ipynb' } });
  });

  it('builds a full request', () => {
    const result = buildJobRequest('fit.ipynb', {
      group: 'physics',
      cpu: '2',
      memory: '4Gi',
      accelerator: 'mig:1g.10gb',
      count: '2',
      offload: 'hpc',
      hours: '1.5',
      parameters: '{"alpha": 0.5, "tags": ["a"]}'
    });
    expect(result).toEqual({
      ok: true,
      request: {
        notebook: 'fit.ipynb',
        parameters: { alpha: 0.5, tags: ['a'] },
        group: 'physics',
        cpu: '2',
        memory: '4Gi',
        accelerator: { kind: 'mig', name: '1g.10gb', count: 2 },
        offload: 'hpc',
        hours: 1.5
      }
    });
  });

  it('counts one accelerator when the count is empty, and ignores the count without one', () => {
    const one = buildJobRequest('a.ipynb', { accelerator: 'gpu:t4', count: '' });
    expect(one.ok && one.request.accelerator).toEqual({ kind: 'gpu', name: 't4', count: 1 });
    const none = buildJobRequest('a.ipynb', { accelerator: '', count: '3' });
    expect(none).toEqual({ ok: true, request: { notebook: 'a.ipynb' } });
  });

  it('leaves out an empty parameters object', () => {
    expect(buildJobRequest('a.ipynb', { parameters: '{}' })).toEqual({
      ok: true,
      request: { notebook: 'a.ipynb' }
    });
  });

  it.each(['{alpha: 1}', '{"a": 1', '[1, 2]', 'null', '3', '"text"'])(
    'refuses parameters %s',
    text => {
      const result = buildJobRequest('a.ipynb', { parameters: text });
      expect(result.ok).toBe(false);
      expect(!result.ok && result.error).toMatch(/parameters/i);
    }
  );

  it.each([
    [{ hours: '0' }, /hours/],
    [{ hours: '-1' }, /hours/],
    [{ hours: 'two' }, /hours/],
    [{ accelerator: 'gpu:t4', count: '0' }, /count/],
    [{ accelerator: 'gpu:t4', count: '1.5' }, /count/],
    [{ accelerator: 'gpu' }, /kind:name/]
  ])('refuses %j', (form, message) => {
    const result = buildJobRequest('a.ipynb', form);
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(message);
  });

  it('refuses a missing notebook', () => {
    expect(buildJobRequest('', {}).ok).toBe(false);
  });
});
