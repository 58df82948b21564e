"""ugro_health.notify"""
