import unittest
from slug import slugify

class H(unittest.TestCase):
    def test_symbols(self):
        self.assertEqual(slugify('  Rust & Python 3!  '), 'rust-python-3')
