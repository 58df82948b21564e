"""ugro_health.render"""
