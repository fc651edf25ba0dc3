"""lowbit.compiler"""
