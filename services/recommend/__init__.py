"""Recommendations: item-to-item co-occurrence from viewing histories, popularity fallback."""
