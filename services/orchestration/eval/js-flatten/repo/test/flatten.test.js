const test = require('node:test');
const assert = require('node:assert');
const { flatten } = require('../flatten');
test('deep', () => assert.deepStrictEqual(flatten([1, [2, [3, [4]]]]), [1, 2, 3, 4]));
