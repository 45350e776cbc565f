"""explain-audit: can this model's explanations be trusted, or can they be fooled?"""

__version__ = "0.1.0"
