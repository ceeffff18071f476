// The unit tests cover the pure modules (format, jobrequest, notices), which
// import no @jupyterlab package: plain Node, no DOM, no babel.
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  collectCoverageFrom: ['src/**/*.ts', '!src/**/*.d.ts']
};
