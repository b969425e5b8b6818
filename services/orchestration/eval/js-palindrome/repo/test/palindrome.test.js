const test = require('node:test');
const assert = require('node:assert');
const { isPalindrome } = require('../palindrome');
test('phrase', () => assert.ok(isPalindrome('Never odd or even')));
