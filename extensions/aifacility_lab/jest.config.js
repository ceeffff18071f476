// The unit tests cover the pure modules (format, jobrequest, notices), which
// import no @jupyterlab package: plain Node, no DOM, no babel.
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  testRegex: 'src/__tests__/.*\\.spec\\.ts$',
  // the built extension's package.json has the same name as ours (jest's module map would warn)
  modulePathIgnorePatterns: ['<rootDir>/aifacility_lab/labextension', '<rootDir>/lib'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  collectCoverageFrom: ['src/**/*.ts', '!src/**/*.d.ts']
};
