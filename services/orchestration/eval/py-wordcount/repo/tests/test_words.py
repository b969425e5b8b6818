import unittest
from words import word_counts

class T(unittest.TestCase):
    def test_case(self):
        self.assertEqual(word_counts('Hello, hello!')['hello'], 2)
