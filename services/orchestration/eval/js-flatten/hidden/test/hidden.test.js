const test = require('node:test');
const assert = require('node:assert');
const { flatten } = require('../flatten');
test('flat', () => assert.deepStrictEqual(flatten([1, 2]), [1, 2]));
