import unittest
from duration import parse_duration

class H(unittest.TestCase):
    def test_all(self):
        self.assertEqual(parse_duration('2m5s'), 125)
        self.assertEqual(parse_duration('1h'), 3600)
