const test = require('node:test');
const assert = require('node:assert');
const { unique } = require('../unique');
test('case', () => assert.deepStrictEqual(unique(['Apple', 'apple', 'pear']), ['Apple', 'pear']));
