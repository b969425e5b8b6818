const test = require('node:test');
const assert = require('node:assert');
const { unique } = require('../unique');
test('order', () => assert.deepStrictEqual(unique(['b', 'a', 'B']), ['b', 'a']));
