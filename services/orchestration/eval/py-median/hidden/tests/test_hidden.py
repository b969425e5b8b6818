import unittest
from stats import median

class H(unittest.TestCase):
    def test_odd(self):
        self.assertEqual(median([5, 1, 3]), 3)
    def test_two(self):
        self.assertEqual(median([1, 2]), 1.5)
