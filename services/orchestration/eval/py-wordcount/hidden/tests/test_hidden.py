import unittest
from words import word_counts

class H(unittest.TestCase):
    def test_mixed(self):
        counts = word_counts('A cat; a CAT. Dog')
        self.assertEqual((counts['a'], counts['cat'], counts['dog']), (2, 2, 1))
