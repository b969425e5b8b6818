const test = require('node:test');
const assert = require('node:assert');
const { range } = require('../range');
test('step', () => assert.deepStrictEqual(range(0, 10, 3), [0, 3, 6, 9]));
