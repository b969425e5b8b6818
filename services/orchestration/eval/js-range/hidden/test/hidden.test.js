const test = require('node:test');
const assert = require('node:assert');
const { range } = require('../range');
test('default', () => assert.deepStrictEqual(range(1, 4), [1, 2, 3]));
